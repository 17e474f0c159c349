//! The streaming runtime's operators: the graph `cdp plan --streaming` prints
//! (`cdp_compiler::stream`), run on events one at a time.
//!
//! - **Source** — a row of a source, in event time. The clock is the greatest event time seen;
//!   the watermark trails it by the allowed lateness. A row older than the watermark is *late*:
//!   counted and kept aside ([`StreamEngine::late`]), never applied and never dropped silently.
//! - **KeyByProfile** — incremental identity: each row's key values (normalized and excluded as
//!   the entity says) become identifiers joined by a union-find, with `max N per profile`
//!   applied in arrival order. When a row links two profiles, their states merge and the
//!   survivor keeps the id of the one seen first; a new profile's id is the MD5 of its anchor,
//!   as in the batch program.
//! - **Behavior / WindowedAggregates / SequenceDetector** — per profile, the state of every
//!   aggregate ([`aggregate`]: running values, or the window's events pruned as they leave it)
//!   and the step times of every sequence (pruned to the sequence's window).
//! - **ProfileValues / SegmentEvaluator** — a profile changed by events is evaluated at the
//!   next [`StreamEngine::advance`]: attributes, features and segments in dependency order, with
//!   the expression semantics of the SQL ([`eval`]). Segment changes become enter/exit
//!   [`Transition`]s. Timers in event time re-evaluate profiles when time alone can change a
//!   value: an event leaving a window, a sequence's negated step running out, a future-dated
//!   event becoming visible, and for conditions reading `now()` the instants where a timestamp
//!   value plus a duration of the condition is reached (and every UTC midnight).
//!
//! The values at an as-of time T, after every event up to T has arrived and the engine advanced
//! to T, equal the batch program's values as of T (the property test `stream_equals_batch`).

pub mod aggregate;
pub mod checkpoint;
mod deps;
pub mod eval;
pub mod feed;
mod horizon;
pub mod journey;
pub mod value;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use cdp_compiler::ir::{
    self, AttributeValue, EntityId, Expr, ExprKind, ProfileValue, SegmentId, SourceId,
};

use aggregate::{AggSpec, AggState};
use deps::Inputs;
use eval::{eval, ProfileValues, Regexes, Scope};
use journey::{Happened, JourneyState};
pub use value::Value;

use crate::identity::md5_id;

/// Timeless records (sources without a time column) count as seen at 1900-01-01, as in SQL.
const BEGINNING: i64 = -2_208_988_800_000_000;
/// A watched condition's next change when time alone never changes it.
const NEVER: i64 = i64::MAX;

/// Options of the engine.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How far behind the clock an event may be and still count (milliseconds).
    pub allowed_lateness_ms: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            allowed_lateness_ms: 60 * 60 * 1000,
        }
    }
}

/// A segment entry or exit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Transition {
    pub entity: EntityId,
    #[serde(with = "checkpoint::arc_str")]
    pub canonical_id: Arc<str>,
    pub segment: SegmentId,
    pub entered: bool,
    /// When (event time, microseconds).
    pub at: i64,
    /// No event caused it: time passing did (a window emptied, a sequence's wait ran out).
    pub by_time: bool,
}

/// A journey step of one profile: entered, reached a node, fired an activation, ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JourneyEvent {
    pub entity: EntityId,
    #[serde(with = "checkpoint::arc_str")]
    pub canonical_id: Arc<str>,
    pub journey: ir::JourneyId,
    pub happened: Happened,
    /// The instant of the step that did it (microseconds).
    pub step_at: i64,
}

/// An event older than the watermark when it arrived: kept aside.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Late {
    pub source: SourceId,
    pub row: Vec<Value>,
    pub time: i64,
    pub watermark: i64,
}

/// What the engine has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub rows: u64,
    pub late: u64,
    /// Rows of bound sources without any identity key value: no profile to count them for.
    pub without_key: u64,
    /// Links dropped by `max N per profile`.
    pub links_dropped: u64,
    pub merges: u64,
    /// Rows of timed sources without a time.
    pub untimed: u64,
    /// Profile evaluations: after events (at advances) and at timers (time alone).
    pub evaluations: u64,
    pub timer_evaluations: u64,
}

/// Canonical ids of profiles to write to the online store, and ids merged away with the id
/// of the profile they were merged into ([`StreamEngine::take_unpublished`]).
pub type Unpublished = (Vec<Arc<str>>, Vec<(Arc<str>, Arc<str>)>);

/// The streaming runtime for one project.
pub struct StreamEngine {
    project: Arc<ir::Project>,
    re: Regexes,
    entities: Vec<EntityState>,
    clock: i64,
    lateness: i64,
    late: Vec<Late>,
    counts: Counts,
    /// Set while [`StreamEngine::start_from`] feeds history: no timer fires.
    quiet: bool,
    transitions: Vec<Transition>,
    journey_events: Vec<JourneyEvent>,
}

/// What an entity's operators read from the project, computed once.
#[derive(Default)]
struct EntityPlan {
    id: EntityId,
    /// Per source: its key bindings in key-priority order.
    bindings: HashMap<SourceId, Vec<ir::KeyBinding>>,
    aggregates: Vec<(ir::AggregateId, AggSpec)>,
    /// Per source: behaviors reading it.
    behaviors: HashMap<SourceId, Vec<ir::BehaviorId>>,
    /// Per behavior of the project: where its events go in this entity's plan.
    routes: Vec<Route>,
    /// Per sequence of the entity: the window, and per step (behavior, filter, within, negated).
    sequences: Vec<ir::SequenceId>,
    /// Attributes read from sources, and whether each takes the latest row.
    source_attributes: Vec<ir::AttributeId>,
    latest: Vec<bool>,
    segments: Vec<SegmentId>,
    journeys: Vec<ir::JourneyId>,
    /// The segment conditions and journey conditions that time alone can change (they read
    /// `now()`, a windowed aggregate or a sequence), with the values that do written in place:
    /// a profile's timer is set for when time alone may next change one ([`horizon`]).
    watched: Vec<horizon::Watch>,
    /// Per aggregate / sequence of the plan: whether a segment or a journey condition reads
    /// it (transitively). Only those set timers: what nothing time-driven reads is computed
    /// when it is read.
    timed_aggregates: Vec<bool>,
    timed_sequences: Vec<bool>,
    /// The attributes (0, id) and features (1, id) segments and journey conditions read.
    timed_values: HashSet<(u8, u32)>,
    /// The derived attributes, features and segments among those whose value reads `now()`
    /// (directly or through another profile value), in evaluation order: all that can change
    /// when only the clock moves (no event, no aggregate or sequence expiry).
    clock_values: Vec<ProfileValue>,
    /// Whether a journey condition reads `now()` itself (then every evaluation steps them).
    journeys_read_now: bool,
    /// What the events of a profile can change ([`deps`]): per watched condition, per
    /// aggregate, per sequence and per source attribute of the plan, their inputs.
    watched_inputs: Vec<Inputs>,
    aggregate_inputs: Vec<Inputs>,
    sequence_inputs: Vec<Inputs>,
    source_attribute_inputs: Vec<Inputs>,
    /// Per sequence: whether time alone moves it (a window or a negated step).
    sequence_moves: Vec<bool>,
    /// The derived attributes, features and segments an evaluation computes (those segments
    /// and journey conditions read, and every segment), in evaluation order, with their
    /// inputs and whether time alone moves them (they read `now()`, a windowed aggregate or a
    /// moving sequence, directly or through another value).
    values: Vec<(ProfileValue, Inputs, bool)>,
}

/// The aggregates (by position in the plan) and sequence steps (sequence position, step) one
/// behavior's events feed.
#[derive(Default)]
struct Route {
    aggregates: Vec<usize>,
    steps: Vec<(usize, usize)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Node {
    parent: u32,
    key: u32,
    #[serde(with = "checkpoint::arc_str")]
    text: Arc<str>,
    first_seen: i64,
}

/// The operators' state of one profile.
#[derive(serde::Serialize, serde::Deserialize)]
struct Profile {
    #[serde(with = "checkpoint::arc_str")]
    id: Arc<str>,
    /// (first seen, priority, `key:value`) of the anchor identifier.
    #[serde(with = "checkpoint::anchor")]
    anchor: (i64, u64, Arc<str>),
    aggregates: Vec<AggState>,
    /// Per sequence, per step: event times, sorted.
    sequences: Vec<Vec<Vec<i64>>>,
    /// Per source attribute: the best (order, value) so far.
    attributes: Vec<Option<(Value, Value)>>,
    /// Events dated after the clock when they arrived: applied once the clock reaches them.
    #[serde(with = "checkpoint::pending")]
    pending: Vec<(i64, ir::BehaviorId, Arc<[Value]>)>,
    values: ProfileValues,
    members: Vec<bool>,
    /// Per watched condition of the plan: the first instant after the last evaluation at which
    /// time alone may change it ([`NEVER`]: never). An instant stays right while nothing the
    /// condition reads changes (no event of its inputs, no merge), so an evaluation works out
    /// again only the conditions due by then or touched since. Empty: all are worked out at
    /// the next evaluation.
    horizons: Vec<i64>,
    /// The inputs events changed since the last evaluation (everything for a new or merged
    /// profile).
    touched: Inputs,
    /// Per journey of the entity: where the profile is.
    journeys: Vec<Option<JourneyState>>,
    /// Per journey: the states of profiles merged into this one since the last advance, with
    /// their ids; the next step keeps the profile's own state, else the one entered first.
    #[serde(with = "checkpoint::carried")]
    carried: Vec<Vec<(Arc<str>, JourneyState)>>,
    /// The advance (generation) the profile was created after: a profile that lived through
    /// an advance has an id the outside has seen, and keeps it when merging with a newer one.
    born: u64,
    alive: bool,
}

/// Checkpoints ([`checkpoint`]) write every field but the plan and the index, which are
/// rebuilt from the project and the nodes.
#[derive(serde::Serialize, serde::Deserialize)]
struct EntityState {
    #[serde(skip)]
    plan: EntityPlan,
    nodes: Vec<Node>,
    #[serde(skip)]
    index: HashMap<(u32, Arc<str>), u32>,
    /// Per node and key: the identifiers of that key linked to it (in the order links were
    /// decided: first seen, then by value).
    links: HashMap<(u32, u32), Vec<u32>>,
    /// Links through a key with `max N per profile`, not decided yet: (node, node) → first seen.
    /// Whether such a link counts depends on the links seen before it (by time, then by
    /// value), so they are decided together, in that order, at the next advance.
    undecided: HashMap<(u32, u32), i64>,
    /// How many advances the entity has been through.
    generation: u64,
    /// Evaluations (all, by a timer).
    evaluations: (u64, u64),
    /// Per union-find root: the profile slot.
    slot_of: HashMap<u32, usize>,
    /// Per canonical id of a live profile: its slot (rebuilt from `profiles` on restore).
    #[serde(skip)]
    slot_of_id: HashMap<Arc<str>, usize>,
    profiles: Vec<Profile>,
    /// Profiles with events (or merges) since their last evaluation, each with the clock at
    /// the last of them: the instant it is evaluated at, whatever timer comes first.
    dirty: BTreeMap<usize, i64>,
    timers: BTreeSet<(i64, usize)>,
    timer_of: HashMap<usize, i64>,
    /// Profiles merged into another since the last advance, with their memberships.
    #[serde(with = "checkpoint::gone")]
    gone: Vec<(Arc<str>, Vec<bool>)>,
    /// Profiles evaluated since their journeys last stepped.
    changed: BTreeSet<usize>,
    /// When time alone moves a profile's journeys (a wait, a timeout, a re-entry delay).
    journey_timers: BTreeSet<(i64, usize)>,
    journey_timer_of: HashMap<usize, i64>,
    /// Profiles that finished a `reentry always` journey whose entry still holds: they enter
    /// again at the next step, as the next batch run enters them.
    reentering: BTreeSet<usize>,
    /// Recompute whole profiles at every evaluation (for comparing against the incremental
    /// paths).
    #[serde(skip)]
    full_evaluations: bool,
    /// Profiles whose values, memberships, journey places or identifiers may have changed
    /// since [`StreamEngine::take_unpublished`] last took them, and the ids merged away since,
    /// with the id of their survivor (for the online store). Not checkpointed: what a
    /// restarted engine applies again marks its profiles again, and the server writes those
    /// of events it had not written before (`Live::catch_up`).
    #[serde(skip)]
    unpublished: BTreeSet<usize>,
    #[serde(skip)]
    merged_away: Vec<(Arc<str>, Arc<str>)>,
}

impl StreamEngine {
    pub fn new(project: Arc<ir::Project>, options: Options) -> StreamEngine {
        let entities = (0..project.entities.len())
            .map(|e| EntityState::new(plan_entity(&project, EntityId(e as u32))))
            .collect();
        StreamEngine {
            project,
            re: Regexes::default(),
            entities,
            clock: i64::MIN,
            quiet: false,
            lateness: options.allowed_lateness_ms as i64 * 1000,
            late: Vec::new(),
            counts: Counts::default(),
            transitions: Vec::new(),
            journey_events: Vec::new(),
        }
    }

    pub fn project(&self) -> &ir::Project {
        &self.project
    }

    /// The greatest event time seen (or advanced to), microseconds.
    pub fn clock(&self) -> i64 {
        self.clock
    }

    pub fn watermark(&self) -> i64 {
        self.clock.saturating_sub(self.lateness)
    }

    pub fn counts(&self) -> Counts {
        let mut c = self.counts;
        for st in &self.entities {
            c.evaluations += st.evaluations.0;
            c.timer_evaluations += st.evaluations.1;
        }
        c
    }

    pub fn late(&self) -> &[Late] {
        &self.late
    }

    /// The segment transitions since the last call.
    pub fn take_transitions(&mut self) -> Vec<Transition> {
        std::mem::take(&mut self.transitions)
    }

    /// Applies one row of `source` (values in the source's column order and types).
    pub fn ingest(&mut self, source: SourceId, row: Vec<Value>) {
        let src = &self.project.sources[source.index()];
        let time = src.time.and_then(|c| row.get(c.index())?.as_micros());
        if src.time.is_some() && time.is_none() {
            // A timed source's row without a time is never visible (SQL: `time <= T` is
            // unknown): counted, kept aside.
            self.counts.untimed += 1;
            self.late.push(Late {
                source,
                row,
                time: i64::MIN,
                watermark: self.watermark(),
            });
            return;
        }
        if let Some(t) = time {
            if self.clock != i64::MIN && t < self.watermark() {
                self.counts.late += 1;
                self.late.push(Late {
                    source,
                    row,
                    time: t,
                    watermark: self.watermark(),
                });
                return;
            }
            if t > self.clock {
                // Timers due before this event fire first: they see the profile without it.
                if !self.quiet {
                    self.fire_timers(t - 1);
                }
                self.clock = t;
            }
        }
        self.counts.rows += 1;
        let row: Arc<[Value]> = row.into();
        let seen = time.unwrap_or(BEGINNING);
        let project = self.project.clone();
        for (e, entity) in project.entities.iter().enumerate() {
            let Some(bindings) = self.entities[e].plan.bindings.get(&source).cloned() else {
                continue;
            };
            let mut nodes: Vec<u32> = Vec::with_capacity(bindings.len());
            for b in &bindings {
                let raw = eval(&b.value, &Scope::row(&row, self.clock), &self.re);
                if let Some(text) = normalized(entity, b.key, &raw, &self.re, self.clock) {
                    nodes.push(self.entities[e].node(b.key.0, text, seen, entity));
                }
            }
            let Some(&strongest) = nodes.first() else {
                self.counts.without_key += 1;
                continue;
            };
            let st = &mut self.entities[e];
            for i in 0..nodes.len() {
                for j in i + 1..nodes.len() {
                    let (a, b) = (nodes[i], nodes[j]);
                    if a == b {
                        continue;
                    }
                    let limited = [a, b].iter().any(|&n| {
                        entity.keys[st.nodes[n as usize].key as usize]
                            .max_per_profile
                            .is_some()
                    });
                    if limited {
                        let first = st.undecided.entry((a.min(b), a.max(b))).or_insert(seen);
                        *first = (*first).min(seen);
                    } else if !st.link(entity, a, b, &mut self.counts, self.clock) {
                        self.counts.links_dropped += 1;
                    }
                }
            }
            st.ensure_profiles(&nodes, entity, &project, self.clock);
            let slot = st.slot(strongest);
            st.apply(slot, source, &row, &project, &self.re, self.clock);
            st.dirty.insert(slot, self.clock);
        }
    }

    /// Evaluates the profiles whose timers are due at or before `t`, each at its timer's time.
    /// A profile with events since its last evaluation is first evaluated as of the last of
    /// them, which sets its timers afresh: what its events changed happens then, whether a
    /// timer kept from before (which may come early) or the next advance comes first.
    fn fire_timers(&mut self, t: i64) {
        for st in &mut self.entities {
            while let Some(&(at, slot)) = st.timers.first() {
                if at > t {
                    break;
                }
                if let Some(since) = st.dirty.remove(&slot) {
                    let out = &mut self.transitions;
                    let since = if since == i64::MIN { at } else { since };
                    st.evaluate(slot, since, false, &self.project, &self.re, out);
                    continue;
                }
                st.timers.pop_first();
                st.timer_of.remove(&slot);
                if st.profiles[slot].alive {
                    let out = &mut self.transitions;
                    st.evaluate(slot, at, true, &self.project, &self.re, out);
                }
            }
        }
    }

    /// Starts the engine from history (the source files): ingests `rows` in order without
    /// evaluating anything at the instants between them, then evaluates every profile once at
    /// `at` (or the last row's time, if later). The state afterwards is what a batch run at
    /// that time computes; the segment entries and journey steps it reports all happen then.
    pub fn start_from(&mut self, rows: impl IntoIterator<Item = (SourceId, Vec<Value>)>, at: i64) {
        self.quiet = true;
        for (source, row) in rows {
            self.ingest(source, row);
        }
        self.quiet = false;
        self.clock = at.max(self.clock);
        self.touch_all();
        self.advance(self.clock);
    }

    /// Makes every evaluation recompute the whole profile and every next-change instant, as
    /// for a new profile, instead of only what the events since the last evaluation and the
    /// passing of time can have changed. Slower; the result is the same (a test compares the
    /// two).
    pub fn evaluate_fully(&mut self) {
        for st in &mut self.entities {
            st.full_evaluations = true;
        }
    }

    /// Marks every profile changed now, so that the next [`StreamEngine::advance`] evaluates
    /// them all (values reading `now()` change with time alone).
    pub fn touch_all(&mut self) {
        let now = self.clock;
        for st in &mut self.entities {
            let alive: Vec<usize> = (0..st.profiles.len())
                .filter(|&i| st.profiles[i].alive)
                .collect();
            st.dirty.extend(alive.into_iter().map(|slot| (slot, now)));
        }
    }

    /// The canonical ids of an entity's profiles that may have changed (values, memberships,
    /// journey places, identifiers) since the last call, and the ids merged away since, each
    /// with the id it was merged into (which may itself be merged away later).
    pub fn take_unpublished(&mut self, entity: EntityId) -> Unpublished {
        let st = &mut self.entities[entity.index()];
        let ids = std::mem::take(&mut st.unpublished)
            .into_iter()
            .map(|slot| &st.profiles[slot])
            .filter(|p| p.alive)
            .map(|p| p.id.clone())
            .collect();
        (ids, std::mem::take(&mut st.merged_away))
    }

    /// Where a profile stands in each journey of its entity that it has entered.
    pub fn journeys_of(&self, entity: EntityId, id: &str) -> Vec<(ir::JourneyId, &JourneyState)> {
        let st = &self.entities[entity.index()];
        let Some(p) = st.slot_of_id.get(id).map(|&s| &st.profiles[s]) else {
            return Vec::new();
        };
        st.plan
            .journeys
            .iter()
            .zip(&p.journeys)
            .filter_map(|(j, s)| Some((*j, s.as_ref()?)))
            .collect()
    }

    /// Evaluates every profile with events since its last evaluation as of the last of them
    /// (what events change happens when they arrive, not whenever the clock next moves), then
    /// fires the timers due by `t` and moves the clock to `t` (if later): afterwards
    /// [`StreamEngine::values`] are the values as of the clock.
    pub fn advance(&mut self, t: i64) {
        let to = t.max(self.clock);
        for (e, entity) in self.project.entities.iter().enumerate() {
            let st = &mut self.entities[e];
            st.decide_links(entity, &mut self.counts, self.clock);
            // Each profile with events since its last evaluation, as of the last of them (rows
            // without a time, before the clock started: as of `t`).
            for (slot, since) in std::mem::take(&mut st.dirty) {
                if st.profiles[slot].alive {
                    let out = &mut self.transitions;
                    let since = if since == i64::MIN { to } else { since };
                    st.evaluate(slot, since, false, &self.project, &self.re, out);
                }
            }
        }
        self.fire_timers(t);
        if t > self.clock {
            self.clock = t;
        }
        let now = self.clock;
        for st in &mut self.entities {
            for (id, members) in std::mem::take(&mut st.gone) {
                for (i, m) in members.into_iter().enumerate() {
                    if m {
                        self.transitions.push(Transition {
                            entity: st.plan.id,
                            canonical_id: id.clone(),
                            segment: st.plan.segments[i],
                            entered: false,
                            at: now,
                            by_time: false,
                        });
                    }
                }
            }
            st.step_journeys(now, &self.project, &self.re, &mut self.journey_events);
            st.generation += 1;
        }
    }

    /// The journey steps since the last call.
    pub fn take_journey_events(&mut self) -> Vec<JourneyEvent> {
        std::mem::take(&mut self.journey_events)
    }

    /// Every profile's place in every journey of an entity: (canonical id, journey, state).
    pub fn journey_states(
        &self,
        entity: EntityId,
    ) -> impl Iterator<Item = (&str, ir::JourneyId, &JourneyState)> {
        let st = &self.entities[entity.index()];
        st.profiles.iter().filter(|p| p.alive).flat_map(move |p| {
            st.plan
                .journeys
                .iter()
                .zip(&p.journeys)
                .filter_map(move |(j, s)| Some((&*p.id, *j, s.as_ref()?)))
        })
    }

    /// The profiles of an entity with their values computed as of the clock.
    pub fn profiles(&self, entity: EntityId) -> impl Iterator<Item = (&str, ProfileValues)> {
        let st = &self.entities[entity.index()];
        st.profiles.iter().filter(|p| p.alive).map(move |p| {
            let v = compute(&st.plan, p, self.clock, &self.project, &self.re, false);
            (&*p.id, v)
        })
    }

    /// The segment memberships the engine holds for each profile of an entity (what its
    /// transitions have said so far), by canonical id: the segments it is in.
    pub fn memberships(&self, entity: EntityId) -> impl Iterator<Item = (&str, Vec<SegmentId>)> {
        let st = &self.entities[entity.index()];
        st.profiles.iter().filter(|p| p.alive).map(move |p| {
            let ins = st.plan.segments.iter().zip(&p.members);
            (&*p.id, ins.filter(|(_, m)| **m).map(|(s, _)| *s).collect())
        })
    }

    /// The canonical id of the profile holding identifier `key_name:value` (normalized).
    pub fn canonical_id(&self, entity: EntityId, key: &str, value: &str) -> Option<&str> {
        let st = &self.entities[entity.index()];
        let k = self.project.entities[entity.index()]
            .keys
            .iter()
            .position(|x| x.name == key)?;
        let n = *st.index.get(&(k as u32, Arc::from(value)))?;
        let slot = *st.slot_of.get(&st.find(n))?;
        Some(&st.profiles[slot].id)
    }

    /// The profile holding identity key `key` = `raw` (normalized as the entity says), or with
    /// that canonical id when `key` is `canonical_id`: its id and its values computed as of the
    /// clock (values no segment reads set no timers, so the stored ones may be older).
    pub fn lookup(&self, entity: EntityId, key: &str, raw: &str) -> Option<(&str, ProfileValues)> {
        let st = &self.entities[entity.index()];
        let now = |p: &Profile| compute(&st.plan, p, self.clock, &self.project, &self.re, false);
        if key == "canonical_id" {
            let p = &st.profiles[*st.slot_of_id.get(raw)?];
            return p.alive.then(|| (&*p.id, now(p)));
        }
        let e = &self.project.entities[entity.index()];
        let k = e.keys.iter().position(|x| x.name == key)?;
        let text = normalized(
            e,
            ir::KeyId(k as u32),
            &Value::str(raw),
            &self.re,
            self.clock,
        )?;
        let n = *st.index.get(&(k as u32, Arc::from(text.as_ref())))?;
        let p = &st.profiles[*st.slot_of.get(&st.find(n))?];
        Some((&*p.id, now(p)))
    }

    /// Every identifier of an entity with its profile's canonical id and when it was first
    /// seen: `(key, value, id, first seen)`.
    pub fn identifiers(&self, entity: EntityId) -> Vec<(String, String, String, i64)> {
        let st = &self.entities[entity.index()];
        let keys = &self.project.entities[entity.index()].keys;
        (0..st.nodes.len() as u32)
            .filter_map(|n| {
                let slot = st.slot_of.get(&st.find(n))?;
                let node = &st.nodes[n as usize];
                Some((
                    keys[node.key as usize].name.clone(),
                    node.text.to_string(),
                    st.profiles[*slot].id.to_string(),
                    node.first_seen,
                ))
            })
            .collect()
    }

    /// The identifiers of the live profile with canonical id `id`: `(key, value, first seen)`,
    /// found by walking the links that joined its component from its anchor identifier (every
    /// union of two components follows a link kept on both sides), not by scanning every
    /// identifier of the entity.
    pub fn identifiers_of(&self, entity: EntityId, id: &str) -> Vec<(String, String, i64)> {
        let st = &self.entities[entity.index()];
        let keys = &self.project.entities[entity.index()].keys;
        let start = st
            .slot_of_id
            .get(id)
            .map(|&slot| &st.profiles[slot])
            .filter(|p| p.alive)
            .and_then(|p| p.anchor.2.split_once(':'))
            .and_then(|(name, text)| {
                let k = keys.iter().position(|k| k.name == name)?;
                st.index.get(&(k as u32, Arc::from(text))).copied()
            });
        let Some(start) = start else {
            return Vec::new();
        };
        let root = st.find(start);
        let mut seen: HashSet<u32> = HashSet::from([start]);
        let mut todo = vec![start];
        let mut out = Vec::new();
        while let Some(n) = todo.pop() {
            let node = &st.nodes[n as usize];
            out.push((
                keys[node.key as usize].name.clone(),
                node.text.to_string(),
                node.first_seen,
            ));
            for k in 0..keys.len() as u32 {
                for &m in st.links.get(&(n, k)).into_iter().flatten() {
                    if st.find(m) == root && seen.insert(m) {
                        todo.push(m);
                    }
                }
            }
        }
        out
    }

    /// Bytes of operator state, roughly, and the number of live profiles.
    pub fn state_bytes(&self) -> (usize, usize) {
        let mut bytes = 0;
        let mut profiles = 0;
        for st in &self.entities {
            bytes += st.nodes.len() * (std::mem::size_of::<Node>() + 24);
            for p in st.profiles.iter().filter(|p| p.alive) {
                profiles += 1;
                bytes += std::mem::size_of::<Profile>();
                for ((_, spec), s) in st.plan.aggregates.iter().zip(&p.aggregates) {
                    bytes += spec.bytes(s);
                }
                bytes += p
                    .sequences
                    .iter()
                    .flatten()
                    .map(|s| s.len() * 8)
                    .sum::<usize>();
                bytes += p.pending.len() * 64;
                // The values of the last evaluation, kept for the next, and the instants.
                let v = &p.values;
                let cells = v.attributes.len()
                    + v.aggregates.len()
                    + v.features.len()
                    + v.sequences.len()
                    + v.segments.len();
                bytes += cells * std::mem::size_of::<Value>() + p.horizons.len() * 8;
            }
        }
        (bytes, profiles)
    }
}

/// The normalized value of key `key` from a raw value: cast to text, `normalize`d, null when
/// excluded (as `cdp_compiler::sql` prints it).
fn normalized(
    entity: &ir::Entity,
    key: ir::KeyId,
    raw: &Value,
    re: &Regexes,
    as_of: i64,
) -> Option<Arc<str>> {
    let text = raw.cast_text()?;
    let k = &entity.keys[key.index()];
    let v = match &k.normalize {
        Some(n) => {
            let raw = Value::str(&text);
            let scope = Scope {
                row: &[],
                key: Some(&raw),
                profile: None,
                as_of,
            };
            eval(n, &scope, re).cast_text()?
        }
        None => text,
    };
    if k.exclude.contains(&v) {
        return None;
    }
    Some(Arc::from(v))
}

fn plan_entity(p: &ir::Project, id: EntityId) -> EntityPlan {
    let entity = &p.entities[id.index()];
    let mut bindings: HashMap<SourceId, Vec<ir::KeyBinding>> = HashMap::new();
    for b in &entity.bindings {
        bindings.entry(b.source).or_default().push(b.clone());
    }
    for bs in bindings.values_mut() {
        bs.sort_by_key(|b| entity.keys[b.key.index()].priority);
    }
    let mut behaviors: HashMap<SourceId, Vec<ir::BehaviorId>> = HashMap::new();
    for (i, b) in p.behaviors.iter().enumerate() {
        if b.entity == id {
            behaviors
                .entry(b.source)
                .or_default()
                .push(ir::BehaviorId(i as u32));
        }
    }
    let aggregates: Vec<(ir::AggregateId, AggSpec)> = p
        .aggregates
        .iter()
        .enumerate()
        .filter(|(_, a)| p.behaviors[a.behavior.index()].entity == id)
        .map(|(i, a)| (ir::AggregateId(i as u32), AggSpec::of(a)))
        .collect();
    let sequences: Vec<ir::SequenceId> = p
        .sequences
        .iter()
        .enumerate()
        .filter(|(_, s)| p.behaviors[s.first.behavior.index()].entity == id)
        .map(|(i, _)| ir::SequenceId(i as u32))
        .collect();
    let source_attributes: Vec<ir::AttributeId> = p
        .attributes
        .iter()
        .enumerate()
        .filter(|(_, a)| a.entity == id && matches!(a.value, AttributeValue::FromSource { .. }))
        .map(|(i, _)| ir::AttributeId(i as u32))
        .collect();
    let segments: Vec<SegmentId> = p
        .segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.entity == id)
        .map(|(i, _)| SegmentId(i as u32))
        .collect();
    let journeys: Vec<ir::JourneyId> = p
        .journeys
        .iter()
        .enumerate()
        .filter(|(_, j)| j.entity == id)
        .map(|(i, _)| ir::JourneyId(i as u32))
        .collect();
    // What segments and journey conditions read, transitively.
    let mut seen: BTreeSet<(u8, u32)> = BTreeSet::new();
    let mut stack: Vec<&Expr> = segments
        .iter()
        .map(|s| &p.segments[s.index()].condition)
        .collect();
    for j in &journeys {
        stack.extend(journey_conditions(&p.journeys[j.index()]));
    }
    while let Some(e) = stack.pop() {
        e.walk(|x| match &x.kind {
            ExprKind::Attribute(a) if seen.insert((0, a.0)) => {
                if let AttributeValue::Derived(d) = &p.attributes[a.index()].value {
                    stack.push(d);
                }
            }
            ExprKind::Feature(f) if seen.insert((1, f.0)) => {
                stack.push(&p.features[f.index()].value)
            }
            ExprKind::Segment(s) if seen.insert((2, s.0)) => {
                stack.push(&p.segments[s.index()].condition)
            }
            ExprKind::Aggregate(a) => {
                seen.insert((3, a.0));
            }
            ExprKind::Sequence(q) => {
                seen.insert((4, q.0));
            }
            _ => {}
        });
    }
    let mut journeys_read_now = false;
    for j in &journeys {
        for e in journey_conditions(&p.journeys[j.index()]) {
            e.walk(|x| journeys_read_now |= is_now(&x.kind));
        }
    }
    let timed_aggregates = aggregates
        .iter()
        .map(|(a, _)| seen.contains(&(3, a.0)))
        .collect();
    let timed_sequences = sequences.iter().map(|q| seen.contains(&(4, q.0))).collect();
    // Time moves windowed aggregates and sequences with a window or a negated step too.
    let leaf_of = |k: &ExprKind| -> Option<(horizon::Leaf, horizon::Mono)> {
        use cdp_compiler::types::Aggregate as F;
        use horizon::Mono;
        match k {
            ExprKind::Aggregate(a) => {
                let i = aggregates.iter().position(|(x, _)| x == a)?;
                let spec = &aggregates[i].1;
                spec.window?;
                let mono = match spec.function {
                    // Events only leave the window. Max and Min are not monotone: an
                    // emptied window makes them null, which flips a negated comparison.
                    F::Count | F::CountDistinct | F::ApproxCountDistinct => Mono::Down,
                    _ => Mono::Other,
                };
                Some((horizon::Leaf::Aggregate(i), mono))
            }
            ExprKind::Sequence(q) => {
                let i = sequences.iter().position(|x| x == q)?;
                let seq = &p.sequences[q.index()];
                let mono = if seq.then.iter().any(|x| x.negated) {
                    Mono::Other
                } else if seq.window_ms.is_some() {
                    Mono::Down // steps only leave the window
                } else {
                    return None; // steps never leave: only events change it
                };
                Some((horizon::Leaf::Sequence(i), mono))
            }
            _ => None,
        }
    };
    let moving = horizon::Watch::moving(p, id, &leaf_of);
    let mut watched: Vec<horizon::Watch> = segments
        .iter()
        .filter(|s| moving.contains(&(2, s.0)))
        .map(|s| horizon::Watch::inline(&p.segments[s.index()].condition, p, &moving, &leaf_of))
        .collect();
    for j in &journeys {
        for e in journey_conditions(&p.journeys[j.index()]) {
            let w = horizon::Watch::inline(e, p, &moving, &leaf_of);
            if w.moves() {
                watched.push(w);
            }
        }
    }
    let mut routes: Vec<Route> = (0..p.behaviors.len()).map(|_| Route::default()).collect();
    for (i, (aid, _)) in aggregates.iter().enumerate() {
        routes[p.aggregates[aid.index()].behavior.index()]
            .aggregates
            .push(i);
    }
    for (i, sid) in sequences.iter().enumerate() {
        let seq = &p.sequences[sid.index()];
        let steps = std::iter::once(&seq.first).chain(seq.then.iter().map(|x| &x.step));
        for (k, step) in steps.enumerate() {
            routes[step.behavior.index()].steps.push((i, k));
        }
    }
    let mut reads = deps::Reads::new(p);
    let watched_inputs = watched.iter().map(|w| reads.of(w.expr())).collect();
    let aggregate_inputs = aggregates
        .iter()
        .map(|(a, _)| reads.of_value((3, a.0)))
        .collect();
    let sequence_inputs = sequences.iter().map(|q| reads.of_value((4, q.0))).collect();
    let source_attribute_inputs = source_attributes
        .iter()
        .map(|a| reads.of_value((0, a.0)))
        .collect();
    let sequence_moves = sequences
        .iter()
        .map(|q| {
            let seq = &p.sequences[q.index()];
            seq.window_ms.is_some() || seq.then.iter().any(|x| x.negated)
        })
        .collect();
    let values = p
        .profile_order
        .iter()
        .filter_map(|pv| {
            let tag = match *pv {
                ProfileValue::Attribute(a)
                    if p.attributes[a.index()].entity == id
                        && matches!(p.attributes[a.index()].value, AttributeValue::Derived(_))
                        && seen.contains(&(0, a.0)) =>
                {
                    (0, a.0)
                }
                ProfileValue::Feature(f)
                    if p.features[f.index()].entity == id && seen.contains(&(1, f.0)) =>
                {
                    (1, f.0)
                }
                ProfileValue::Segment(s) if p.segments[s.index()].entity == id => (2, s.0),
                _ => return None,
            };
            Some((*pv, reads.of_value(tag), moving.contains(&tag)))
        })
        .collect();
    let latest = source_attributes
        .iter()
        .map(|a: &ir::AttributeId| {
            matches!(
                p.attributes[a.index()].value,
                AttributeValue::FromSource { latest: true, .. }
            )
        })
        .collect();
    EntityPlan {
        latest,
        id,
        bindings,
        aggregates,
        behaviors,
        routes,
        sequences,
        source_attributes,
        segments,
        journeys,
        watched,
        timed_aggregates,
        timed_sequences,
        timed_values: seen.iter().copied().filter(|(k, _)| *k < 2).collect(),
        clock_values: clock_values(p, id, &seen),
        journeys_read_now,
        watched_inputs,
        aggregate_inputs,
        sequence_inputs,
        source_attribute_inputs,
        sequence_moves,
        values,
    }
}

/// `now()` (or the as-of time) itself.
fn is_now(kind: &ExprKind) -> bool {
    matches!(
        kind,
        ExprKind::AsOf | ExprKind::Call(cdp_compiler::types::Function::Now, _)
    )
}

/// The profile values of entity `id` among `read` (and every segment) that read `now()`,
/// directly or through a profile value that does, in evaluation order.
fn clock_values(p: &ir::Project, id: EntityId, read: &BTreeSet<(u8, u32)>) -> Vec<ProfileValue> {
    let mut clocked: HashSet<(u8, u32)> = HashSet::new();
    let mut out = Vec::new();
    for pv in &p.profile_order {
        let (tag, expr) = match *pv {
            ProfileValue::Attribute(a) if p.attributes[a.index()].entity == id => {
                match &p.attributes[a.index()].value {
                    AttributeValue::Derived(e) => ((0, a.0), e),
                    _ => continue,
                }
            }
            ProfileValue::Feature(f) if p.features[f.index()].entity == id => {
                ((1, f.0), &p.features[f.index()].value)
            }
            ProfileValue::Segment(s) if p.segments[s.index()].entity == id => {
                ((2, s.0), &p.segments[s.index()].condition)
            }
            _ => continue,
        };
        let mut reads = false;
        expr.walk(|x| match &x.kind {
            k if is_now(k) => reads = true,
            ExprKind::Attribute(a) if clocked.contains(&(0, a.0)) => reads = true,
            ExprKind::Feature(f) if clocked.contains(&(1, f.0)) => reads = true,
            ExprKind::Segment(s) if clocked.contains(&(2, s.0)) => reads = true,
            _ => {}
        });
        if reads {
            clocked.insert(tag);
            if tag.0 == 2 || read.contains(&tag) {
                out.push(*pv);
            }
        }
    }
    out
}

/// Every condition of a journey: entry, goal, exit, `wait until` and `branch` conditions.
fn journey_conditions(j: &ir::Journey) -> Vec<&Expr> {
    let mut out = vec![&j.entry];
    out.extend(j.goal.iter().chain(j.exit.iter()));
    for node in &j.nodes {
        match &node.kind {
            ir::NodeKind::WaitUntil { condition, .. } => out.push(condition),
            ir::NodeKind::Branch { arms, .. } => out.extend(arms.iter().map(|(c, _)| c)),
            _ => {}
        }
    }
    out
}

impl EntityState {
    fn new(plan: EntityPlan) -> EntityState {
        EntityState {
            plan,
            nodes: Vec::new(),
            index: HashMap::new(),
            links: HashMap::new(),
            undecided: HashMap::new(),
            generation: 0,
            evaluations: (0, 0),
            slot_of: HashMap::new(),
            slot_of_id: HashMap::new(),
            profiles: Vec::new(),
            dirty: BTreeMap::new(),
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            gone: Vec::new(),
            changed: BTreeSet::new(),
            journey_timers: BTreeSet::new(),
            journey_timer_of: HashMap::new(),
            reentering: BTreeSet::new(),
            full_evaluations: false,
            unpublished: BTreeSet::new(),
            merged_away: Vec::new(),
        }
    }

    fn find(&self, mut n: u32) -> u32 {
        while self.nodes[n as usize].parent != n {
            n = self.nodes[n as usize].parent;
        }
        n
    }

    fn find_compress(&mut self, n: u32) -> u32 {
        let root = self.find(n);
        let mut x = n;
        while self.nodes[x as usize].parent != root {
            let next = self.nodes[x as usize].parent;
            self.nodes[x as usize].parent = root;
            x = next;
        }
        root
    }

    fn slot(&mut self, n: u32) -> usize {
        let root = self.find_compress(n);
        self.slot_of[&root]
    }

    /// The identifier `key:text`, created (seen at `seen`) if new; an earlier sighting moves
    /// its first-seen time back.
    fn node(&mut self, key: u32, text: Arc<str>, seen: i64, entity: &ir::Entity) -> u32 {
        if let Some(&n) = self.index.get(&(key, text.clone())) {
            if seen < self.nodes[n as usize].first_seen {
                self.nodes[n as usize].first_seen = seen;
                let root = self.find_compress(n);
                if let Some(&slot) = self.slot_of.get(&root) {
                    let node = &self.nodes[n as usize];
                    let candidate = (
                        seen,
                        entity.keys[key as usize].priority,
                        anchor_text(node, &entity.keys),
                    );
                    let p = &mut self.profiles[slot];
                    if candidate < p.anchor {
                        p.anchor = candidate;
                    }
                }
            }
            return n;
        }
        let n = self.nodes.len() as u32;
        self.nodes.push(Node {
            parent: n,
            key,
            text: text.clone(),
            first_seen: seen,
        });
        self.index.insert((key, text), n);
        n
    }

    /// Decides the undecided links, first seen first (then by the identifiers' `key:value`, as
    /// the batch program ranks them), so that each identifier keeps the same N as in batch.
    fn decide_links(&mut self, entity: &ir::Entity, counts: &mut Counts, at: i64) {
        if self.undecided.is_empty() {
            return;
        }
        let mut order: Vec<RankedLink> = self
            .undecided
            .drain()
            .map(|((a, b), t)| {
                let (ta, tb) = (
                    anchor_text(&self.nodes[a as usize], &entity.keys),
                    anchor_text(&self.nodes[b as usize], &entity.keys),
                );
                if ta <= tb {
                    (t, ta, tb, a, b)
                } else {
                    (t, tb, ta, b, a)
                }
            })
            .collect();
        order.sort();
        for (_, _, _, a, b) in order {
            if !self.link(entity, a, b, counts, at) {
                counts.links_dropped += 1;
            }
        }
    }

    /// Links two identifiers of one record unless a `max N per profile` limit drops the link
    /// (each side ranks its links of the other's key in arrival order); merges their profiles.
    fn link(&mut self, entity: &ir::Entity, a: u32, b: u32, counts: &mut Counts, at: i64) -> bool {
        if a == b {
            return true;
        }
        let (ka, kb) = (self.nodes[a as usize].key, self.nodes[b as usize].key);
        let mut keep = true;
        for (from, to, key) in [(a, b, kb), (b, a, ka)] {
            let limit = entity.keys[key as usize].max_per_profile;
            let list = self.links.entry((from, key)).or_default();
            if !list.contains(&to) {
                if limit.is_some_and(|l| list.len() as u64 >= l) {
                    keep = false;
                } else {
                    list.push(to);
                }
            }
        }
        let side = |st: &EntityState, from: u32, to: u32, key: u32| {
            st.links.get(&(from, key)).is_some_and(|l| l.contains(&to))
        };
        let decided_before = side(self, a, b, kb) && side(self, b, a, ka);
        if !(keep || decided_before) {
            return false;
        }
        let (ra, rb) = (self.find_compress(a), self.find_compress(b));
        if ra == rb {
            return true;
        }
        counts.merges +=
            u64::from(self.slot_of.contains_key(&ra) && self.slot_of.contains_key(&rb));
        self.nodes[rb as usize].parent = ra;
        match (self.slot_of.remove(&ra), self.slot_of.remove(&rb)) {
            (Some(x), Some(y)) => {
                // The survivor keeps its id, the other's state joins it. As in batch: an id
                // seen before (at an advance) wins over a new one; of two seen ids, the one
                // whose identifiers were seen first (then the smaller id); of two new
                // profiles, the one with the first anchor.
                let rank = |p: &Profile| {
                    if p.born < self.generation {
                        (0, p.anchor.0, p.id.clone(), 0, Arc::from(""))
                    } else {
                        (1, p.anchor.0, Arc::from(""), p.anchor.1, p.anchor.2.clone())
                    }
                };
                let (keep, gone) = if rank(&self.profiles[x]) <= rank(&self.profiles[y]) {
                    (x, y)
                } else {
                    (y, x)
                };
                self.merge(keep, gone, at);
                self.slot_of.insert(ra, keep);
            }
            (Some(x), None) | (None, Some(x)) => {
                self.slot_of.insert(ra, x);
            }
            (None, None) => {}
        }
        true
    }

    /// Creates the profile of each new component among a record's identifiers (every other
    /// identifier already has one): its id is the MD5 of its anchor, the member with the least
    /// (first seen, priority, key:value).
    fn ensure_profiles(
        &mut self,
        nodes: &[u32],
        entity: &ir::Entity,
        project: &ir::Project,
        at: i64,
    ) {
        for &n in nodes {
            let root = self.find_compress(n);
            if self.slot_of.contains_key(&root) {
                continue;
            }
            let anchor = nodes
                .iter()
                .filter(|&&m| self.find(m) == root)
                .map(|&m| {
                    let node = &self.nodes[m as usize];
                    (
                        node.first_seen,
                        entity.keys[node.key as usize].priority,
                        anchor_text(node, &entity.keys),
                    )
                })
                .min()
                .unwrap_or((0, 0, Arc::from("")));
            let id: Arc<str> =
                Arc::from(std::str::from_utf8(&md5_id(&anchor.2)).unwrap_or_default());
            self.profiles.push(Profile {
                id,
                anchor,
                aggregates: self
                    .plan
                    .aggregates
                    .iter()
                    .map(|(_, s)| s.empty())
                    .collect(),
                sequences: self
                    .plan
                    .sequences
                    .iter()
                    .map(|s| vec![Vec::new(); project.sequences[s.index()].then.len() + 1])
                    .collect(),
                attributes: vec![None; self.plan.source_attributes.len()],
                pending: Vec::new(),
                values: ProfileValues::default(),
                members: vec![false; self.plan.segments.len()],
                horizons: Vec::new(),
                touched: Inputs::ALL,
                journeys: vec![None; self.plan.journeys.len()],
                carried: vec![Vec::new(); self.plan.journeys.len()],
                born: self.generation,
                alive: true,
            });
            let slot = self.profiles.len() - 1;
            self.slot_of.insert(root, slot);
            self.slot_of_id.insert(self.profiles[slot].id.clone(), slot);
            self.dirty.insert(slot, at);
        }
    }

    /// Applies a row to a profile: the events of the behaviors reading its source (those dated
    /// after the clock wait until it reaches them) and its source attributes.
    fn apply(
        &mut self,
        slot: usize,
        source: SourceId,
        row: &Arc<[Value]>,
        p: &ir::Project,
        re: &Regexes,
        clock: i64,
    ) {
        let scope = Scope::row(row, clock);
        let plan = &self.plan;
        let profile = &mut self.profiles[slot];
        profile.touched.add(Inputs::source(source));
        let behaviors = plan.behaviors.get(&source).map_or(&[][..], Vec::as_slice);
        for &b in behaviors {
            let beh = &p.behaviors[b.index()];
            if let Some(f) = &beh.filter {
                if eval(f, &scope, re).truth() != Some(true) {
                    continue;
                }
            }
            let Some(t) = row.get(beh.time.index()).and_then(Value::as_micros) else {
                continue;
            };
            if t > clock {
                profile.pending.push((t, b, row.clone()));
            } else {
                apply_event(plan, profile, b, t, row, p, re, clock);
            }
        }
        for (i, a) in self.plan.source_attributes.iter().enumerate() {
            let AttributeValue::FromSource {
                source: s,
                value,
                order_by,
                latest,
            } = &p.attributes[a.index()].value
            else {
                continue;
            };
            if *s != source {
                continue;
            }
            let v = eval(value, &scope, re);
            if v.is_null() {
                continue;
            }
            let order = order_by
                .and_then(|c| row.get(c.index()).cloned())
                .unwrap_or(Value::Null);
            let candidate = (order, v);
            let best = &mut self.profiles[slot].attributes[i];
            if best.as_ref().is_none_or(|b| wins(&candidate, b, *latest)) {
                *best = Some(candidate);
            }
        }
    }

    /// Whether the profile's stored values are complete and nothing but `now()` can have
    /// changed them by `at`: no timed aggregate has an event leaving its window by then and no
    /// timed sequence holds step times.
    fn only_the_clock_moves(&self, slot: usize, at: i64) -> bool {
        let profile = &self.profiles[slot];
        if profile.values.segments.is_empty() {
            return false;
        }
        let aggregates = self.plan.aggregates.iter().zip(&profile.aggregates);
        let windows_hold = aggregates
            .zip(&self.plan.timed_aggregates)
            .filter(|(_, timed)| **timed)
            .all(|(((_, spec), state), _)| spec.next_expiry(state).is_none_or(|t| t > at));
        let sequences_empty = profile
            .sequences
            .iter()
            .zip(&self.plan.timed_sequences)
            .filter(|(_, timed)| **timed)
            .all(|(lists, _)| lists.iter().all(Vec::is_empty));
        windows_hold && sequences_empty
    }

    /// Computes a profile's values at `at`, records segment entries and exits, and sets its
    /// next timer.
    fn evaluate(
        &mut self,
        slot: usize,
        at: i64,
        by_time: bool,
        p: &ir::Project,
        re: &Regexes,
        transitions: &mut Vec<Transition>,
    ) {
        self.evaluations.0 += 1;
        self.evaluations.1 += u64::from(by_time);
        // Future-dated events whose time has come.
        let pending = std::mem::take(&mut self.profiles[slot].pending);
        let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(t, _, _)| *t <= at);
        self.profiles[slot].pending = later;
        // A timer where only the clock moved (no event since the last evaluation, no held
        // event due, no event leaving a window, no sequence step times) changes only the
        // values that read now(): those are recomputed, the rest kept.
        let clock_only = by_time
            && !self.full_evaluations
            && due.is_empty()
            && !self.dirty.contains_key(&slot)
            && self.only_the_clock_moves(slot, at);
        for (t, b, row) in due {
            apply_event(&self.plan, &mut self.profiles[slot], b, t, &row, p, re, at);
        }
        let plan = &self.plan;
        let profile = &mut self.profiles[slot];
        // What the events since the last evaluation changed: the rest of the values, and the
        // next-change instants of the watched conditions not due yet, stand.
        let touched = if self.full_evaluations {
            Inputs::ALL
        } else {
            profile.touched
        };
        profile.touched = Inputs::NONE;
        let complete = profile.values.segments.len() == p.segments.len();
        for ((_, spec), state) in plan.aggregates.iter().zip(profile.aggregates.iter_mut()) {
            spec.prune(state, at);
        }
        for (sid, lists) in plan.sequences.iter().zip(profile.sequences.iter_mut()) {
            if let Some(w) = p.sequences[sid.index()].window_ms {
                let from = at - w as i64 * 1000;
                for l in lists.iter_mut() {
                    let cut = l.partition_point(|t| *t <= from);
                    l.drain(..cut);
                }
            }
        }
        // Only what segments and journeys read: the rest is computed when read.
        // Whether a value journeys may read changed (a clock-only evaluation that changed
        // nothing leaves the journeys where they are: a step would find what the last found).
        let mut moved = !clock_only || plan.journeys_read_now;
        let v = if clock_only {
            let mut v = std::mem::take(&mut profile.values);
            for pv in &plan.clock_values {
                let before = v.get(*pv).clone();
                profile_value(*pv, &mut v, at, p, re);
                moved |= before != *v.get(*pv);
            }
            v
        } else if touched != Inputs::ALL && complete {
            let mut v = std::mem::take(&mut profile.values);
            update(plan, profile, &mut v, at, p, re, touched);
            v
        } else {
            compute(plan, profile, at, p, re, true)
        };
        for (i, s) in plan.segments.iter().enumerate() {
            let member = v.segments[s.index()].truth() == Some(true);
            if member != profile.members[i] {
                profile.members[i] = member;
                transitions.push(Transition {
                    entity: plan.id,
                    canonical_id: profile.id.clone(),
                    segment: *s,
                    entered: member,
                    at,
                    by_time,
                });
            }
        }
        // The next instant time alone may change something the segments read.
        let mut next: Option<i64> = None;
        let mut consider = |t: i64| {
            if t > at && next.is_none_or(|n| t < n) {
                next = Some(t);
            }
        };
        let mut v = v;
        if !plan.segments.is_empty() {
            for (t, _, _) in &profile.pending {
                consider(*t);
            }
            let keep = touched != Inputs::ALL && profile.horizons.len() == plan.watched.len();
            if !keep {
                profile.horizons.clear();
                profile.horizons.resize(plan.watched.len(), NEVER);
            }
            let mut clock: Option<horizon::Clock<'_>> = None;
            let watched = plan.watched.iter().zip(&plan.watched_inputs);
            for ((w, inputs), h) in watched.zip(profile.horizons.iter_mut()) {
                if keep && *h > at && !touched.meets(*inputs) {
                    if *h != NEVER {
                        consider(*h);
                    }
                    continue;
                }
                let clock = clock.get_or_insert_with(|| {
                    let leaves = horizon::Leaves {
                        project: p,
                        aggregates: &plan.aggregates,
                        states: &profile.aggregates,
                        sequences: &plan.sequences,
                        lists: &profile.sequences,
                    };
                    horizon::Clock::new(std::mem::take(&mut v), at, re, leaves)
                });
                *h = clock.next(w).unwrap_or(NEVER);
                if *h != NEVER {
                    consider(*h);
                }
            }
            if let Some(clock) = clock {
                v = clock.into_values();
            }
        }
        profile.values = v;
        if moved {
            self.changed.insert(slot);
            self.unpublished.insert(slot);
        }
        if let Some(old) = self.timer_of.remove(&slot) {
            self.timers.remove(&(old, slot));
        }
        if let Some(t) = next {
            self.timers.insert((t, slot));
            self.timer_of.insert(slot, t);
        }
    }

    /// Steps the journeys of every profile whose step could do something at `at`: those
    /// evaluated since their last step, those a wait or re-entry delay falls due for, and those
    /// about to enter a `reentry always` journey again. Stepping any other profile would change
    /// nothing, so the states equal a batch run's at `at`.
    fn step_journeys(
        &mut self,
        at: i64,
        p: &ir::Project,
        re: &Regexes,
        events: &mut Vec<JourneyEvent>,
    ) {
        if self.plan.journeys.is_empty() {
            self.changed.clear();
            return;
        }
        let mut due = std::mem::take(&mut self.changed);
        due.append(&mut std::mem::take(&mut self.reentering));
        while let Some(&(t, slot)) = self.journey_timers.first() {
            if t > at {
                break;
            }
            self.journey_timers.pop_first();
            self.journey_timer_of.remove(&slot);
            due.insert(slot);
        }
        for slot in due {
            let profile = &mut self.profiles[slot];
            if !profile.alive {
                continue;
            }
            // After merges: the profile's own state stands, else the one entered first (then
            // by the merged profile's id), as the batch program carries states over.
            for (own, carried) in profile.journeys.iter_mut().zip(&mut profile.carried) {
                let candidates = std::mem::take(carried);
                if own.is_none() {
                    *own = candidates
                        .into_iter()
                        .min_by(|(a, x), (b, y)| (x.entered_at, a).cmp(&(y.entered_at, b)))
                        .map(|(_, state)| state);
                }
            }
            let mut next: Option<i64> = None;
            let mut again = false;
            for (i, jid) in self.plan.journeys.iter().enumerate() {
                let journey = &p.journeys[jid.index()];
                let values = &profile.values;
                let mut holds = |e: &Expr| profile_eval(e, values, at, re).truth() == Some(true);
                let happened = journey::step(
                    journey,
                    &profile.id,
                    &mut profile.journeys[i],
                    &mut holds,
                    at,
                );
                if !happened.is_empty() {
                    self.unpublished.insert(slot);
                }
                events.extend(happened.into_iter().map(|h| JourneyEvent {
                    entity: self.plan.id,
                    canonical_id: profile.id.clone(),
                    journey: *jid,
                    happened: h,
                    step_at: at,
                }));
                if let Some(state) = &profile.journeys[i] {
                    if let Some(t) = journey::next_due(journey, state) {
                        next = Some(next.map_or(t, |n: i64| n.min(t)));
                    }
                    again |= state.status != journey::Status::Active
                        && journey.reentry == ir::Reentry::Always
                        && holds(&journey.entry);
                }
            }
            if let Some(old) = self.journey_timer_of.remove(&slot) {
                self.journey_timers.remove(&(old, slot));
            }
            if let Some(t) = next {
                // A due time already passed moves nothing more until something changes.
                if t > at {
                    self.journey_timers.insert((t, slot));
                    self.journey_timer_of.insert(slot, t);
                }
            }
            if again {
                self.reentering.insert(slot);
            }
        }
    }

    fn merge(&mut self, keep: usize, gone: usize, at: i64) {
        let other = std::mem::replace(
            &mut self.profiles[gone],
            Profile {
                id: Arc::from(""),
                anchor: (0, 0, Arc::from("")),
                aggregates: Vec::new(),
                sequences: Vec::new(),
                attributes: Vec::new(),
                pending: Vec::new(),
                values: ProfileValues::default(),
                members: Vec::new(),
                horizons: Vec::new(),
                touched: Inputs::ALL,
                journeys: Vec::new(),
                carried: Vec::new(),
                born: 0,
                alive: false,
            },
        );
        let gone_members = other.members.clone();
        let gone_id = other.id.clone();
        self.slot_of_id.remove(&gone_id);
        self.merged_away
            .push((gone_id.clone(), self.profiles[keep].id.clone()));
        let p = &mut self.profiles[keep];
        for (((_, spec), mine), theirs) in self
            .plan
            .aggregates
            .iter()
            .zip(p.aggregates.iter_mut())
            .zip(other.aggregates)
        {
            spec.merge(mine, theirs);
        }
        for (mine, theirs) in p.sequences.iter_mut().zip(other.sequences) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.extend(t);
                m.sort_unstable();
            }
        }
        for (i, (mine, theirs)) in p.attributes.iter_mut().zip(other.attributes).enumerate() {
            if let Some(t) = theirs {
                if mine
                    .as_ref()
                    .is_none_or(|m| wins(&t, m, self.plan.latest[i]))
                {
                    *mine = Some(t);
                }
            }
        }
        p.pending.extend(other.pending);
        // The merged profile's journey states are candidates for the survivor's, decided at
        // its next step (see `Profile::carried`).
        for ((carried, theirs), mut more) in
            p.carried.iter_mut().zip(other.journeys).zip(other.carried)
        {
            carried.append(&mut more);
            if let Some(state) = theirs {
                carried.push((gone_id.clone(), state));
            }
        }
        if let Some(t) = self.journey_timer_of.remove(&gone) {
            self.journey_timers.remove(&(t, gone));
        }
        self.reentering.remove(&gone);
        self.changed.remove(&gone);
        self.changed.insert(keep);
        self.unpublished.remove(&gone);
        self.unpublished.insert(keep);
        if other.anchor < p.anchor {
            p.anchor = other.anchor;
        }
        p.touched = Inputs::ALL;
        self.dirty.remove(&gone);
        self.dirty.insert(keep, at);
        if let Some(t) = self.timer_of.remove(&gone) {
            self.timers.remove(&(t, gone));
        }
        // The merged profile leaves its segments (the survivor enters them on evaluation).
        self.gone.push((gone_id, gone_members));
    }
}

/// A link to decide, in deciding order: (first seen, smaller `key:value`, larger `key:value`,
/// node of the smaller, node of the larger).
type RankedLink = (i64, Arc<str>, Arc<str>, u32, u32);

fn anchor_text(node: &Node, keys: &[ir::IdentityKey]) -> Arc<str> {
    match keys.get(node.key as usize) {
        Some(k) => Arc::from(format!("{}:{}", k.name, node.text)),
        None => node.text.clone(),
    }
}

/// Whether row `a` (order, value) wins over `b` for a source attribute, as
/// `ORDER BY order DESC|ASC NULLS LAST, v DESC` ranks them.
fn wins(a: &(Value, Value), b: &(Value, Value), latest: bool) -> bool {
    use std::cmp::Ordering::*;
    let by_order = match (a.0.is_null(), b.0.is_null()) {
        (false, true) => Greater,
        (true, false) => Less,
        (true, true) => Equal,
        (false, false) if latest => a.0.total_cmp(&b.0),
        (false, false) => b.0.total_cmp(&a.0),
    };
    by_order.then_with(|| a.1.total_cmp(&b.1)) == Greater
}

fn profile_eval(e: &Expr, v: &ProfileValues, at: i64, re: &Regexes) -> Value {
    let scope = Scope {
        row: &[],
        key: None,
        profile: Some(v),
        as_of: at,
    };
    eval(e, &scope, re)
}

/// `did a then b within D … [over W]` at `at`, from the sorted times of each step's events.
/// A profile's values at `at` from its operator state, in dependency order; with `timed`,
/// only those segments and journey conditions read (the others stay null).
fn compute(
    plan: &EntityPlan,
    profile: &Profile,
    at: i64,
    p: &ir::Project,
    re: &Regexes,
    timed: bool,
) -> ProfileValues {
    let mut v = ProfileValues {
        attributes: vec![Value::Null; p.attributes.len()],
        aggregates: vec![Value::Null; p.aggregates.len()],
        features: vec![Value::Null; p.features.len()],
        sequences: vec![Value::Null; p.sequences.len()],
        segments: vec![Value::Null; p.segments.len()],
    };
    let aggregates = plan.aggregates.iter().zip(&profile.aggregates);
    for (((aid, spec), state), read) in aggregates.zip(&plan.timed_aggregates) {
        if *read || !timed {
            v.aggregates[aid.index()] = spec.value(state, at);
        }
    }
    let sequences = plan.sequences.iter().zip(&profile.sequences);
    for ((sid, lists), read) in sequences.zip(&plan.timed_sequences) {
        if *read || !timed {
            v.sequences[sid.index()] =
                Value::Bool(sequence_holds(&p.sequences[sid.index()], lists, at));
        }
    }
    for (aid, best) in plan.source_attributes.iter().zip(&profile.attributes) {
        v.attributes[aid.index()] = best.as_ref().map_or(Value::Null, |(_, x)| x.clone());
    }
    for pv in &p.profile_order {
        match *pv {
            ProfileValue::Attribute(a) if timed && !plan.timed_values.contains(&(0, a.0)) => {}
            ProfileValue::Feature(f) if timed && !plan.timed_values.contains(&(1, f.0)) => {}
            ProfileValue::Attribute(a) if p.attributes[a.index()].entity == plan.id => {
                profile_value(*pv, &mut v, at, p, re)
            }
            ProfileValue::Feature(f) if p.features[f.index()].entity == plan.id => {
                profile_value(*pv, &mut v, at, p, re)
            }
            ProfileValue::Segment(s) if p.segments[s.index()].entity == plan.id => {
                profile_value(*pv, &mut v, at, p, re)
            }
            _ => {}
        }
    }
    v
}

/// One event of behavior `b` at `t`: into the aggregates and sequence steps reading it.
#[allow(clippy::too_many_arguments)]
fn apply_event(
    plan: &EntityPlan,
    profile: &mut Profile,
    b: ir::BehaviorId,
    t: i64,
    row: &[Value],
    p: &ir::Project,
    re: &Regexes,
    clock: i64,
) {
    let scope = Scope::row(row, clock);
    profile.touched.add(Inputs::behavior(b));
    let Some(route) = plan.routes.get(b.index()) else {
        return;
    };
    for &i in &route.aggregates {
        let (aid, spec) = &plan.aggregates[i];
        let agg = &p.aggregates[aid.index()];
        // Outside the window at the clock, so outside it for every later as-of time.
        if spec.window.is_some_and(|w| t <= clock - w) {
            continue;
        }
        if let Some(f) = &agg.filter {
            if eval(f, &scope, re).truth() != Some(true) {
                continue;
            }
        }
        let v = agg
            .value
            .as_ref()
            .map_or(Value::Int(1), |e| eval(e, &scope, re));
        spec.add(&mut profile.aggregates[i], t, v);
    }
    for &(i, k) in &route.steps {
        let seq = &p.sequences[plan.sequences[i].index()];
        let step = if k == 0 {
            &seq.first
        } else {
            &seq.then[k - 1].step
        };
        if let Some(f) = &step.filter {
            if eval(f, &scope, re).truth() != Some(true) {
                continue;
            }
        }
        let times = &mut profile.sequences[i][k];
        let at = times.partition_point(|x| *x <= t);
        times.insert(at, t);
    }
}

/// Brings a profile's values, complete as of its last evaluation, to `at` after events that
/// changed `touched`: recomputes what reads a touched input or moves with time, in evaluation
/// order, and keeps the rest (what it reads is as it was).
fn update(
    plan: &EntityPlan,
    profile: &Profile,
    v: &mut ProfileValues,
    at: i64,
    p: &ir::Project,
    re: &Regexes,
    touched: Inputs,
) {
    let aggregates = plan.aggregates.iter().zip(&profile.aggregates);
    let read = plan.timed_aggregates.iter().zip(&plan.aggregate_inputs);
    for (((aid, spec), state), (timed, inputs)) in aggregates.zip(read) {
        if *timed && (spec.window.is_some() || touched.meets(*inputs)) {
            v.aggregates[aid.index()] = spec.value(state, at);
        }
    }
    let sequences = plan.sequences.iter().zip(&profile.sequences);
    let read = plan.timed_sequences.iter().zip(&plan.sequence_inputs);
    for (((sid, lists), (timed, inputs)), moves) in sequences.zip(read).zip(&plan.sequence_moves) {
        if *timed && (*moves || touched.meets(*inputs)) {
            v.sequences[sid.index()] =
                Value::Bool(sequence_holds(&p.sequences[sid.index()], lists, at));
        }
    }
    let attributes = plan.source_attributes.iter().zip(&profile.attributes);
    for ((aid, best), inputs) in attributes.zip(&plan.source_attribute_inputs) {
        if touched.meets(*inputs) {
            v.attributes[aid.index()] = best.as_ref().map_or(Value::Null, |(_, x)| x.clone());
        }
    }
    for (pv, inputs, moves) in &plan.values {
        if *moves || touched.meets(*inputs) {
            profile_value(*pv, v, at, p, re);
        }
    }
}

/// Computes one derived attribute, feature or segment of `v` from the values before it.
fn profile_value(pv: ProfileValue, v: &mut ProfileValues, at: i64, p: &ir::Project, re: &Regexes) {
    match pv {
        ProfileValue::Attribute(a) => {
            if let AttributeValue::Derived(e) = &p.attributes[a.index()].value {
                v.attributes[a.index()] = profile_eval(e, v, at, re);
            }
        }
        ProfileValue::Feature(f) => {
            v.features[f.index()] = profile_eval(&p.features[f.index()].value, v, at, re);
        }
        ProfileValue::Segment(s) => {
            let c = profile_eval(&p.segments[s.index()].condition, v, at, re);
            v.segments[s.index()] = Value::Bool(c.truth() == Some(true));
        }
    }
}

fn sequence_holds(seq: &ir::Sequence, lists: &[Vec<i64>], at: i64) -> bool {
    fn chain(seq: &ir::Sequence, lists: &[Vec<i64>], k: usize, prev: i64, at: i64) -> bool {
        let Some(step) = seq.then.get(k - 1) else {
            return true;
        };
        let within = step.within_ms as i64 * 1000;
        let inside = |t: &&i64| **t > prev && **t <= prev + within && **t <= at;
        if step.negated {
            prev + within <= at
                && !lists[k].iter().any(|t| inside(&t))
                && chain(seq, lists, k + 1, prev, at)
        } else {
            lists[k]
                .iter()
                .filter(inside)
                .any(|&t| chain(seq, lists, k + 1, t, at))
        }
    }
    let from = seq.window_ms.map_or(i64::MIN, |w| at - w as i64 * 1000);
    lists[0]
        .iter()
        .filter(|&&t| t > from && t <= at)
        .any(|&t| chain(seq, lists, 1, t, at))
}
