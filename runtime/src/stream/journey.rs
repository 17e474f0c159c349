//! Journey state machines in the stream. A step is the batch program's journey run
//! (`cdp_compiler::sql`, "journey") applied to one profile at one instant: entry (under the
//! re-entry policy), goal and exit, then rounds of moves until nothing moves (waits that are
//! due, conditions of `wait until` and `branch`, splits by the profile's hash, activations),
//! with the time each node was reached. The engine steps a profile's journeys at each
//! [`super::StreamEngine::advance`] where its values changed or it has a journey state, so
//! the state at T after advancing at T1 < T2 < … < T equals batch runs at those instants.

use cdp_compiler::ir::{self, Expr, NodeKind, Reentry};
use md5::{Digest, Md5};

/// Where a profile is in a journey (one row of `<journey>_state_next`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JourneyState {
    pub node: u32,
    pub status: Status,
    /// When the profile reached its node (microseconds).
    pub node_since: i64,
    pub entered_at: i64,
    pub finished_at: Option<i64>,
    /// Per node: when the profile last reached it in this entry.
    pub reached: Vec<Option<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    Active,
    Converted,
    Exited,
    Completed,
}

impl Status {
    /// As the batch tables write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Converted => "converted",
            Status::Exited => "exited",
            Status::Completed => "completed",
        }
    }
}

/// What a step did, in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Happened {
    Entered,
    /// Moved to a node (its stage's name is in the journey).
    Reached {
        node: u32,
        at: i64,
    },
    Fired {
        activation: ir::ActivationId,
        at: i64,
    },
    Ended {
        status: Status,
        at: i64,
    },
}

/// One step of `journey` for the profile `id` at `at`; `holds` says whether a condition of
/// the journey is true for the profile now (NULL is not true, as in a SQL `CASE WHEN`).
pub fn step(
    journey: &ir::Journey,
    id: &str,
    state: &mut Option<JourneyState>,
    holds: &mut dyn FnMut(&Expr) -> bool,
    at: i64,
) -> Vec<Happened> {
    let mut out = Vec::new();
    let may_enter = match (&*state, journey.reentry) {
        (None, _) => true,
        (Some(_), Reentry::Never) => false,
        (Some(s), Reentry::Always) => s.status != Status::Active,
        (Some(s), Reentry::AfterMs(ms)) => {
            s.status != Status::Active && s.finished_at.is_some_and(|f| f <= at - ms as i64 * 1000)
        }
    };
    if may_enter && holds(&journey.entry) {
        let mut reached = vec![None; journey.nodes.len()];
        reached[0] = Some(at);
        *state = Some(JourneyState {
            node: 0,
            status: Status::Active,
            node_since: at,
            entered_at: at,
            finished_at: None,
            reached,
        });
        out.push(Happened::Entered);
    }
    let Some(s) = state.as_mut() else {
        return out;
    };
    if s.status == Status::Active {
        let ended = if journey.goal.as_ref().is_some_and(&mut *holds) {
            Some(Status::Converted)
        } else if journey.exit.as_ref().is_some_and(&mut *holds) {
            Some(Status::Exited)
        } else {
            None
        };
        if let Some(status) = ended {
            s.status = status;
            s.finished_at = Some(at);
            out.push(Happened::Ended { status, at });
        }
    }
    let rounds = journey.nodes.len() * 2 + 2;
    for _ in 0..rounds {
        if s.status != Status::Active {
            break;
        }
        let k = s.node as usize;
        let Some(node) = journey.nodes.get(k) else {
            break;
        };
        let due = |ms: u64| s.node_since + ms as i64 * 1000;
        let (next, since) = match &node.kind {
            NodeKind::Activate { activation, next } => {
                out.push(Happened::Fired {
                    activation: *activation,
                    at: s.node_since,
                });
                (next.0, s.node_since)
            }
            NodeKind::Wait { ms, next } if due(*ms) <= at => (next.0, due(*ms)),
            NodeKind::Wait { .. } => (s.node, s.node_since),
            NodeKind::WaitUntil {
                condition,
                timeout_ms,
                next,
            } => {
                if holds(condition) {
                    (next.0, at)
                } else if due(*timeout_ms) <= at {
                    (next.0, due(*timeout_ms))
                } else {
                    (s.node, s.node_since)
                }
            }
            NodeKind::Branch { arms, otherwise } => {
                let target = arms
                    .iter()
                    .find(|(c, _)| holds(c))
                    .map_or(otherwise.0, |(_, t)| t.0);
                (target, s.node_since)
            }
            NodeKind::Split { arms } => {
                let b = bucket(id, &journey.meta.name);
                let mut upto = 0u32;
                let target = arms
                    .iter()
                    .find(|(bp, _)| {
                        upto += bp;
                        b < upto
                    })
                    .or(arms.last())
                    .map_or(s.node, |(_, t)| t.0);
                (target, s.node_since)
            }
            NodeKind::End => {
                s.status = Status::Completed;
                s.finished_at = Some(s.node_since);
                out.push(Happened::Ended {
                    status: Status::Completed,
                    at: s.node_since,
                });
                break;
            }
        };
        if next == s.node {
            break;
        }
        s.node = next;
        s.node_since = since;
        if let Some(r) = s.reached.get_mut(next as usize) {
            *r = Some(since);
        }
        out.push(Happened::Reached {
            node: next,
            at: since,
        });
    }
    out
}

/// The split bucket of a profile in a journey: the first 32 bits of MD5(`id:journey`) modulo
/// 10,000, as the SQL computes it from the hex digest.
fn bucket(id: &str, journey: &str) -> u32 {
    let digest = Md5::digest(format!("{id}:{journey}").as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 10_000
}

/// The instant after `at` when time alone moves the state: a wait or a timeout falling due,
/// or the re-entry delay running out.
pub fn next_due(journey: &ir::Journey, state: &JourneyState) -> Option<i64> {
    match state.status {
        Status::Active => match &journey.nodes.get(state.node as usize)?.kind {
            NodeKind::Wait { ms, .. } => Some(state.node_since + *ms as i64 * 1000),
            NodeKind::WaitUntil { timeout_ms, .. } => {
                Some(state.node_since + *timeout_ms as i64 * 1000)
            }
            _ => None,
        },
        _ => match journey.reentry {
            Reentry::AfterMs(ms) => Some(state.finished_at? + ms as i64 * 1000),
            _ => None,
        },
    }
}
