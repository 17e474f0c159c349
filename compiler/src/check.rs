//! Checking a project: parse every file, resolve names across files, type every expression,
//! build the dependency graph (cycles are errors) and validate journeys. Every problem of every
//! file is reported; nothing here panics on user input.

use std::collections::{BTreeSet, HashMap};

use cdp_grammar::ast::{
    self, Call, DefKind, Definition, Expr, ExprKind, Ident, Predicate, Sequence, StepKind, UnaryOp,
};

use cdp_grammar::{Diagnostic, FileId, Span};

use crate::config::{self, ProjectConfig};
use crate::graph::{DepGraph, Node};
use crate::journey;
use crate::project::ProjectSources;
use crate::types::{arithmetic, Aggregate, Function, Type};

/// Everything the checker learned about a project; later stages read it.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Parsed files, in the project's file order.
    pub files: Vec<(FileId, ast::File)>,
    pub config: Option<ProjectConfig>,
    /// Definition name → position in `files` (file index, definition index).
    pub symbols: HashMap<String, (usize, usize)>,
    /// Value types of attributes and features (segments are `bool`).
    pub types: HashMap<String, Type>,
    /// The type of every expression, by its span.
    pub expr_types: HashMap<Span, Type>,
    /// Nodes are the definitions in file order; see [`DepGraph`].
    pub graph: DepGraph,
    /// Every problem found in every file, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The definition with this name, if there is one.
    pub fn definition(&self, name: &str) -> Option<&Definition> {
        let &(f, d) = self.symbols.get(name)?;
        Some(&self.files[f].1.definitions[d])
    }

    /// All definitions in file order.
    pub fn definitions(&self) -> impl Iterator<Item = &Definition> {
        self.files.iter().flat_map(|(_, f)| f.definitions.iter())
    }
}

/// Stack for checking: expressions nest up to the parser's limits, and the recursive descent
/// over them must not depend on how large the caller's stack happens to be.
const CHECK_STACK_BYTES: usize = 256 << 20;

/// Checks a whole project; never panics, reports all problems of all files.
pub fn check(project: &ProjectSources) -> Checked {
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("cdp-check".into())
            .stack_size(CHECK_STACK_BYTES)
            .spawn_scoped(scope, || check_on_this_thread(project));
        match spawned {
            // A panic in the checker is a bug: it travels on to the caller, once.
            Ok(worker) => worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // Spawning fails only when the OS refuses a thread; checking here is the best we can do.
            Err(_) => check_on_this_thread(project),
        }
    })
}

fn check_on_this_thread(project: &ProjectSources) -> Checked {
    let mut diagnostics = Vec::new();
    let mut files = Vec::new();
    for &id in &project.files {
        let parsed = cdp_grammar::parse_file(id, &project.map.get(id).text);
        diagnostics.extend(parsed.diagnostics);
        files.push((id, parsed.file));
    }
    let config = project
        .config
        .and_then(|id| match config::parse_config(&project.map, id) {
            Ok(c) => Some((id, c)),
            Err(d) => {
                diagnostics.push(*d);
                None
            }
        });

    let defs: Vec<&Definition> = files
        .iter()
        .flat_map(|(_, f)| f.definitions.iter())
        .collect();
    let mut checker = Checker::new(&defs);
    checker.run();
    if let Some((id, config)) = &config {
        checker.check_bindings(*id, &project.map.get(*id).text, config);
    }
    let Checker {
        diags,
        types,
        edges,
        by_name,
        expr_types,
        ..
    } = checker;
    diagnostics.extend(diags);
    diagnostics.sort_by(|a, b| a.span.cmp(&b.span).then_with(|| a.message.cmp(&b.message)));
    diagnostics.dedup();

    let mut symbols = HashMap::new();
    let mut positions = Vec::new();
    for (fi, (_, file)) in files.iter().enumerate() {
        for di in 0..file.definitions.len() {
            positions.push((fi, di));
        }
    }
    for (name, &i) in &by_name {
        symbols.insert(name.to_string(), positions[i]);
    }
    let graph = DepGraph {
        nodes: defs
            .iter()
            .map(|d| Node {
                name: d.name.name.clone(),
                kind: d.kind.keyword(),
            })
            .collect(),
        edges: edges
            .iter()
            .enumerate()
            .flat_map(|(a, ups)| ups.iter().map(move |&b| (a, b)))
            .collect(),
    };
    let types = types
        .into_iter()
        .filter_map(|(i, t)| Some((defs.get(i)?.name.name.clone(), t)))
        .collect();
    Checked {
        files,
        config: config.map(|(_, c)| c),
        symbols,
        types,
        expr_types,
        graph,
        diagnostics,
    }
}

/// Where names in an expression are looked up.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// Attributes, features and segments of an entity (feature/segment/journey expressions).
    Profile { entity: &'a str },
    /// A source's columns, unqualified or qualified by the source or behavior name.
    Columns {
        source: usize,
        qualifier: Option<&'a str>,
    },
    /// The raw value of one identity key (`normalize`).
    KeyValue { key: &'a str },
    /// An attribute: `source.column` of a source linked to the entity, or profile names.
    Attribute { entity: &'a str },
}

/// What an expression is being checked as, beyond its scope.
#[derive(Clone, Copy)]
struct Cx<'a> {
    scope: Scope<'a>,
    /// The definition whose dependencies references are recorded on.
    owner: usize,
    /// Aggregates allowed (features, segments, journeys, metrics).
    aggregates: bool,
    /// Inside a metric measure: aggregates may read features and count the entity.
    metric: bool,
    /// Why aggregates are not allowed, for the message.
    no_aggregate_reason: &'a str,
}

struct Checker<'a> {
    defs: &'a [&'a Definition],
    by_name: HashMap<&'a str, usize>,
    diags: Vec<Diagnostic>,
    /// Value types of attributes/features/segments, by definition index.
    types: HashMap<usize, Type>,
    /// Upstream definitions of each definition.
    edges: Vec<BTreeSet<usize>>,
    /// Definitions on a dependency cycle: their types are unknown.
    on_cycle: Vec<bool>,
    /// The source a qualified attribute reads, per attribute being checked.
    attribute_source: Option<(usize, Span)>,
    attribute_profile_ref: Option<Span>,
    /// The type of every checked expression, by its span (spans of distinct nodes differ).
    expr_types: HashMap<Span, Type>,
}

impl<'a> Checker<'a> {
    fn new(defs: &'a [&'a Definition]) -> Checker<'a> {
        Checker {
            defs,
            by_name: HashMap::with_capacity(defs.len()),
            diags: Vec::new(),
            types: HashMap::new(),
            edges: vec![BTreeSet::new(); defs.len()],
            on_cycle: vec![false; defs.len()],
            attribute_source: None,
            attribute_profile_ref: None,
            expr_types: HashMap::new(),
        }
    }

    fn run(&mut self) {
        for (i, def) in self.defs.iter().enumerate() {
            match self.by_name.get(def.name.name.as_str()) {
                Some(&first) => self.diags.push(
                    Diagnostic::error(
                        "duplicate-name",
                        def.name.span,
                        format!("`{}` is defined more than once", def.name.name),
                    )
                    .with_label(format!("this {} reuses the name", def.kind.keyword()))
                    .with_related(
                        self.defs[first].name.span,
                        format!(
                            "first defined here as a {}",
                            self.defs[first].kind.keyword()
                        ),
                    )
                    .with_note("every definition of a project shares one namespace, across files"),
                ),
                None => {
                    self.by_name.insert(&def.name.name, i);
                }
            }
        }
        let order = self.order_and_cycles();
        for i in order {
            self.definition(i);
        }
    }

    // ------------------------------------------------------------------ order and cycles

    /// Orders definitions so that each comes after what it references (by a syntactic pass
    /// over names), and reports cycles. Checking in this order needs no recursion across
    /// definitions, so deep chains cannot exhaust the stack.
    fn order_and_cycles(&mut self) -> Vec<usize> {
        let n = self.defs.len();
        let mut refs: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, def) in self.defs.iter().enumerate() {
            let mut names = Vec::new();
            syntactic_refs(def, &mut names);
            let by_name = &self.by_name;
            let defs = self.defs;
            // `q.name` names a profile value only when `q` is the entity (`customer.ltv`).
            let qualifier_is_entity = |q: &str| {
                by_name
                    .get(q)
                    .is_some_and(|&j| matches!(defs[j].kind, DefKind::Entity(_)))
            };
            let mut targets: Vec<usize> = names
                .into_iter()
                .filter(|(q, _)| q.is_none_or(qualifier_is_entity))
                .filter_map(|(_, name)| self.by_name.get(name).copied())
                .filter(|&j| {
                    matches!(
                        self.defs[j].kind,
                        DefKind::Attribute(_) | DefKind::Feature(_) | DefKind::Segment(_)
                    )
                })
                .collect();
            targets.sort_unstable();
            targets.dedup();
            refs[i] = targets;
        }
        for scc in tarjan(&refs) {
            let is_cycle = scc.len() > 1 || refs[scc[0]].contains(&scc[0]);
            if !is_cycle {
                continue;
            }
            let mut members = scc.clone();
            members.sort_unstable();
            for &m in &members {
                self.on_cycle[m] = true;
            }
            let path = cycle_path(&refs, &members);
            let first = members[0];
            let shown: Vec<&str> = path
                .iter()
                .map(|&i| self.defs[i].name.name.as_str())
                .collect();
            let mut diag = Diagnostic::error(
                "cycle",
                self.defs[first].name.span,
                format!(
                    "definitions depend on each other in a cycle: {}",
                    shown.join(" -> ")
                ),
            )
            .with_label("this definition depends on itself through the cycle")
            .with_help("break the cycle: one of these must be computed without the others");
            for &m in &members[1..] {
                diag = diag.with_related(self.defs[m].name.span, "part of the cycle");
            }
            self.diags.push(diag);
        }
        // Post-order of the reference graph: references first.
        let mut order = Vec::with_capacity(n);
        let mut state = vec![0u8; n];
        for root in 0..n {
            if state[root] != 0 {
                continue;
            }
            let mut stack = vec![(root, 0usize)];
            state[root] = 1;
            while let Some(&mut (v, ref mut next)) = stack.last_mut() {
                if let Some(&w) = refs[v].get(*next) {
                    *next += 1;
                    if state[w] == 0 {
                        state[w] = 1;
                        stack.push((w, 0));
                    }
                } else {
                    state[v] = 2;
                    order.push(v);
                    stack.pop();
                }
            }
        }
        order
    }

    // ------------------------------------------------------------------ definitions

    fn definition(&mut self, i: usize) {
        let def = self.defs[i];
        if let Some(entity) = def.kind.entity() {
            if let Some(e) = self.entity_ref(entity) {
                self.edges[i].insert(e);
            }
        }
        match &def.kind {
            DefKind::Source(s) => self.source(def, s),
            DefKind::Entity(e) => self.entity(i, def, e),
            DefKind::Attribute(a) => self.attribute(i, a),
            DefKind::Behavior(b) => self.behavior(i, def, b),
            DefKind::Feature(f) => {
                let cx = self.profile_cx(i, &f.entity.name);
                let t = self.expr(&f.value, &cx);
                if t == Type::Bool || !self.on_cycle[i] {
                    self.types
                        .insert(i, if self.on_cycle[i] { Type::Error } else { t });
                }
            }
            DefKind::Segment(s) => {
                let cx = self.profile_cx(i, &s.entity.name);
                let t = self.expr(&s.condition, &cx);
                self.expect_bool(&t, &s.condition, "a segment's condition");
                self.types.insert(i, Type::Bool);
            }
            DefKind::Journey(j) => self.journey(i, def, j),
            DefKind::Metric(m) => self.metric(i, m),
            DefKind::Activation(a) => self.activation(i, a),
        }
    }

    fn profile_cx(&self, owner: usize, entity: &'a str) -> Cx<'a> {
        Cx {
            scope: Scope::Profile { entity },
            owner,
            aggregates: true,
            metric: false,
            no_aggregate_reason: "",
        }
    }

    /// Reports every name of `names` given a second time, pointing at the first.
    fn duplicates<'n>(&mut self, names: impl Iterator<Item = &'n Ident>, what: &str, verb: &str) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for name in names {
            if let Some(first) = seen.insert(&name.name, name.span) {
                self.diags.push(
                    Diagnostic::error(
                        "duplicate-name",
                        name.span,
                        format!("{what} `{}` is {verb} twice", name.name),
                    )
                    .with_related(first, format!("first {verb} here")),
                );
            }
        }
    }

    fn source(&mut self, def: &Definition, s: &ast::Source) {
        if s.columns.is_empty() {
            self.diags.push(
                Diagnostic::error(
                    "empty-source",
                    def.name.span,
                    format!("source `{}` declares no columns", def.name.name),
                )
                .with_help("add `columns { id: string, … }`"),
            );
        }
        self.duplicates(s.columns.iter().map(|c| &c.name), "column", "declared");
        let column = |name: &Ident| s.columns.iter().find(|c| c.name.name == name.name);
        if let Some(key) = &s.key {
            match column(key) {
                None => self.unknown_column(key, def, s),
                Some(c) if c.nullable => self.diags.push(
                    Diagnostic::warning(
                        "nullable-key",
                        key.span,
                        format!("key column `{}` is nullable", key.name),
                    )
                    .with_related(c.span, "declared nullable here")
                    .with_note("rows whose key is null cannot be told apart"),
                ),
                Some(_) => {}
            }
        }
        if let Some(time) = &s.time {
            match column(time) {
                None => self.unknown_column(time, def, s),
                Some(c) => {
                    let t = Type::from_ast(&c.ty);
                    if !t.is_temporal() {
                        self.diags.push(
                            Diagnostic::error(
                                "type",
                                time.span,
                                format!(
                                    "event-time column `{}` is {t}, not a timestamp or date",
                                    time.name
                                ),
                            )
                            .with_related(c.ty.span, "declared here"),
                        );
                    }
                }
            }
        }
    }

    fn unknown_column(&mut self, name: &Ident, def: &Definition, s: &ast::Source) {
        self.diags.push(
            Diagnostic::error(
                "unknown-column",
                name.span,
                format!("source `{}` has no column `{}`", def.name.name, name.name),
            )
            .with_suggestion(&name.name, s.columns.iter().map(|c| c.name.name.as_str())),
        );
    }

    fn entity(&mut self, i: usize, def: &'a Definition, e: &'a ast::Entity) {
        if e.keys.is_empty() {
            self.diags.push(
                Diagnostic::error(
                    "entity-keys",
                    def.name.span,
                    format!("entity `{}` has no identity keys", def.name.name),
                )
                .with_help("add at least one `key <name>`, e.g. `key customer_id`"),
            );
        }
        self.duplicates(e.keys.iter().map(|k| &k.name), "key", "declared");
        for key in &e.keys {
            if let Some(norm) = &key.normalize {
                let cx = Cx {
                    scope: Scope::KeyValue {
                        key: &key.name.name,
                    },
                    owner: i,
                    aggregates: false,
                    metric: false,
                    no_aggregate_reason: "a key is normalized value by value",
                };
                let t = self.expr(norm, &cx);
                if !t.is_lenient() && t != Type::String {
                    self.diags.push(Diagnostic::error(
                        "type",
                        norm.span,
                        format!("`normalize` must give a string, this gives {t}"),
                    ));
                }
            }
            if let Some((0, span)) = key.max_per_profile {
                self.diags.push(Diagnostic::error(
                    "bad-limit",
                    span,
                    "`max 0 per profile` would forbid the key entirely",
                ));
            }
        }
        let mut fed: BTreeSet<&str> = BTreeSet::new();
        let mut sources_seen: HashMap<&str, Span> = HashMap::new();
        for from in &e.from {
            if let Some(first) = sources_seen.insert(&from.source.name, from.source.span) {
                self.diags.push(
                    Diagnostic::error(
                        "duplicate-clause",
                        from.source.span,
                        format!("source `{}` is bound twice", from.source.name),
                    )
                    .with_related(first, "first bound here")
                    .with_help("list all of its keys in one `from` block"),
                );
            }
            let source = self.source_ref(&from.source);
            if let Some(src) = source {
                self.edges[i].insert(src);
            }
            if from.bindings.is_empty() {
                self.diags.push(
                    Diagnostic::error("entity-keys", from.span, "`from` binds no keys")
                        .with_help("e.g. `from orders { customer_id = customer_id }`"),
                );
            }
            for b in &from.bindings {
                match e.keys.iter().find(|k| k.name.name == b.key.name) {
                    Some(_) => {
                        fed.insert(&b.key.name);
                    }
                    None => self.diags.push(
                        Diagnostic::error(
                            "unknown-key",
                            b.key.span,
                            format!("entity `{}` has no key `{}`", def.name.name, b.key.name),
                        )
                        .with_suggestion(&b.key.name, e.keys.iter().map(|k| k.name.name.as_str())),
                    ),
                }
                if let Some(src) = source {
                    let cx = Cx {
                        scope: Scope::Columns {
                            source: src,
                            qualifier: Some(&from.source.name),
                        },
                        owner: i,
                        aggregates: false,
                        metric: false,
                        no_aggregate_reason: "identity keys are read row by row",
                    };
                    let t = self.expr(&b.value, &cx);
                    if matches!(t, Type::List(_) | Type::Bool) {
                        self.diags.push(Diagnostic::error(
                            "type",
                            b.value.span,
                            format!("an identity key must be a scalar value, this is {t}"),
                        ));
                    }
                }
            }
        }
        for key in &e.keys {
            if !fed.contains(key.name.name.as_str()) {
                self.diags.push(
                    Diagnostic::warning(
                        "unused-key",
                        key.name.span,
                        format!("key `{}` is not bound by any `from` block", key.name.name),
                    )
                    .with_help(format!(
                        "add `{} = <column>` to a `from` block",
                        key.name.name
                    )),
                );
            }
        }
    }

    fn attribute(&mut self, i: usize, a: &'a ast::Attribute) {
        self.attribute_source = None;
        self.attribute_profile_ref = None;
        let cx = Cx {
            scope: Scope::Attribute {
                entity: &a.entity.name,
            },
            owner: i,
            aggregates: false,
            metric: false,
            no_aggregate_reason:
                "an attribute is one value per profile; aggregates belong in a `feature`",
        };
        let t = self.expr(&a.value, &cx);
        let source = self.attribute_source.take();
        if let (Some((_, src_span)), Some(profile_span)) =
            (source, self.attribute_profile_ref.take())
        {
            self.diags.push(
                Diagnostic::error("attribute-mix", profile_span, "an attribute reads either one source's columns or other attributes and features, not both")
                    .with_related(src_span, "source column read here"),
            );
        }
        if let Some(pick) = &a.pick {
            match source {
                Some((src, _)) => {
                    if let Some(col) = self.column(src, &pick.by.name) {
                        if !col.is_temporal() && !col.ordered() {
                            self.diags.push(Diagnostic::error(
                                "type",
                                pick.by.span,
                                format!("cannot order rows by `{}` ({col})", pick.by.name),
                            ));
                        }
                    } else {
                        self.unknown_source_column(src, &pick.by);
                    }
                }
                None => self.diags.push(
                    Diagnostic::error(
                        "attribute-pick",
                        pick.span,
                        "`latest by`/`earliest by` only applies to an attribute read from a source",
                    )
                    .with_help("remove it: derived attributes have one value already"),
                ),
            }
        }
        self.types
            .insert(i, if self.on_cycle[i] { Type::Error } else { t });
    }

    fn behavior(&mut self, i: usize, def: &'a Definition, b: &'a ast::Behavior) {
        let Some(src) = self.source_ref(&b.source) else {
            return;
        };
        self.edges[i].insert(src);
        if let Some(entity) = self.by_name.get(b.entity.name.as_str()).copied() {
            if let DefKind::Entity(e) = &self.defs[entity].kind {
                if !e.from.iter().any(|f| f.source.name == b.source.name) {
                    self.diags.push(
                        Diagnostic::error("unlinked-source", b.source.span, format!("source `{}` is not linked to entity `{}`", b.source.name, b.entity.name))
                            .with_help(format!("add `from {} {{ <key> = <column> }}` to entity `{}` so its rows belong to profiles", b.source.name, b.entity.name)),
                    );
                }
            }
        }
        if let Some(filter) = &b.filter {
            let cx = Cx {
                scope: Scope::Columns {
                    source: src,
                    qualifier: Some(&b.source.name),
                },
                owner: i,
                aggregates: false,
                metric: false,
                no_aggregate_reason: "a behavior's filter is applied event by event",
            };
            let t = self.expr(filter, &cx);
            self.expect_bool(&t, filter, "a behavior's `where`");
        }
        let DefKind::Source(s) = &self.defs[src].kind else {
            return;
        };
        match (&b.at, &s.time) {
            (Some(at), _) => match self.column(src, &at.name) {
                Some(t) if t.is_temporal() => {}
                Some(t) => self.diags.push(Diagnostic::error(
                    "type",
                    at.span,
                    format!("event time `{}` is {t}, not a timestamp or date", at.name),
                )),
                None => {
                    // Only a date or timestamp can be an event time: suggest among those.
                    let DefKind::Source(src_def) = &self.defs[src].kind else {
                        return;
                    };
                    let temporal: Vec<&str> = src_def
                        .columns
                        .iter()
                        .filter(|c| Type::from_ast(&c.ty).is_temporal())
                        .map(|c| c.name.name.as_str())
                        .collect();
                    self.diags.push(
                        Diagnostic::error(
                            "unknown-column",
                            at.span,
                            format!("source `{}` has no column `{}`", b.source.name, at.name),
                        )
                        .with_suggestion(&at.name, temporal),
                    );
                }
            },
            (None, Some(_)) => {}
            (None, None) => self.diags.push(
                Diagnostic::error(
                    "no-event-time",
                    def.name.span,
                    format!("behavior `{}` has no event time", def.name.name),
                )
                .with_label(format!(
                    "source `{}` declares no `time` column",
                    b.source.name
                ))
                .with_help("add `at <timestamp column>` here, or `time <column>` to the source"),
            ),
        }
    }

    fn journey(&mut self, i: usize, def: &Definition, j: &'a ast::Journey) {
        let cx = self.profile_cx(i, &j.entity.name);
        for (cond, what) in [
            (&j.entry, "a journey's `entry`"),
            (&j.goal, "a journey's `goal`"),
            (&j.exit, "a journey's `exit`"),
        ] {
            if let Some(c) = cond {
                let t = self.expr(c, &cx);
                self.expect_bool(&t, c, what);
            }
        }
        if let Some(ast::Reentry {
            policy: ast::ReentryPolicy::After(d),
            ..
        }) = &j.reentry
        {
            self.positive_duration(d, "`reentry after`");
        }
        journey::validate(j, def.name.span, &mut self.diags);
        let mut steps = Vec::new();
        journey::for_each_step(&j.stages, &mut |s| steps.push(s));
        for step in steps {
            match &step.kind {
                StepKind::Activate(name) => {
                    if let Some(a) = self
                        .lookup_kind(name, "activation", |k| matches!(k, DefKind::Activation(_)))
                    {
                        self.edges[i].insert(a);
                        self.same_entity(a, &j.entity, name.span);
                    }
                }
                StepKind::Wait(d) => self.positive_duration(d, "`wait`"),
                StepKind::WaitUntil { condition, timeout } => {
                    let t = self.expr(condition, &cx);
                    self.expect_bool(&t, condition, "`wait until`");
                    self.positive_duration(timeout, "`timeout`");
                }
                StepKind::Branch { arms, .. } => {
                    for arm in arms {
                        let t = self.expr(&arm.condition, &cx);
                        self.expect_bool(&t, &arm.condition, "a `when` condition");
                    }
                }
                StepKind::Split(_) | StepKind::Jump(_) | StepKind::End => {}
            }
        }
    }

    fn metric(&mut self, i: usize, m: &'a ast::Metric) {
        for s in &m.segments {
            if let Some(seg) = self.lookup_kind(s, "segment", |k| matches!(k, DefKind::Segment(_)))
            {
                self.edges[i].insert(seg);
                self.same_entity(seg, &m.entity, s.span);
            }
        }
        if m.measures.is_empty() {
            self.diags.push(
                Diagnostic::error("metric-measures", m.entity.span, "metric has no measures")
                    .with_help("add e.g. `measure members = count(customer)`"),
            );
        }
        self.duplicates(m.measures.iter().map(|x| &x.name), "measure", "defined");
        for measure in &m.measures {
            let cx = Cx {
                metric: true,
                ..self.profile_cx(i, &m.entity.name)
            };
            let t = self.expr(&measure.value, &cx);
            if !contains_call(&measure.value) {
                self.diags.push(
                    Diagnostic::error(
                        "metric-measures",
                        measure.value.span,
                        "a measure must aggregate over the segment's members",
                    )
                    .with_help(
                        "e.g. `avg(lifetime_value)`, `count(customer)` or `sum(purchase.amount)`",
                    ),
                );
            } else if !t.is_lenient() && !t.is_numeric() && t != Type::Duration {
                self.diags.push(Diagnostic::error(
                    "type",
                    measure.value.span,
                    format!("a measure must be a number, this is {t}"),
                ));
            }
        }
        if let Some(g) = &m.grain {
            self.positive_duration(g, "`grain`");
        }
    }

    fn activation(&mut self, i: usize, a: &'a ast::Activation) {
        if let Some(s) = &a.segment {
            if let Some(seg) = self.lookup_kind(s, "segment", |k| matches!(k, DefKind::Segment(_)))
            {
                self.edges[i].insert(seg);
                self.same_entity(seg, &a.entity, s.span);
            }
        }
        if a.destination.is_none() {
            self.diags.push(
                Diagnostic::error("activation-destination", self.defs[i].name.span, "activation has no destination")
                    .with_help("add `to file \"out/audience.csv\"`, `to webhook \"https://…\"` or `to postgres \"<connection>\" table \"…\"`"),
            );
        }
        let entity = self.by_name.get(a.entity.name.as_str()).copied();
        let keys: Vec<&str> = match entity.map(|e| &self.defs[e].kind) {
            Some(DefKind::Entity(e)) => e.keys.iter().map(|k| k.name.name.as_str()).collect(),
            _ => Vec::new(),
        };
        for col in &a.columns {
            if keys.contains(&col.name.as_str()) {
                if let Some(&j) = self.by_name.get(col.name.as_str()) {
                    if matches!(
                        self.defs[j].kind,
                        DefKind::Attribute(_) | DefKind::Feature(_)
                    ) {
                        self.diags.push(
                            Diagnostic::warning(
                                "ambiguous-column",
                                col.span,
                                format!(
                                    "`{}` is both an identity key and {} {}; the key is exported",
                                    col.name,
                                    article(self.defs[j].kind.keyword()),
                                    self.defs[j].kind.keyword()
                                ),
                            )
                            .with_related(
                                self.defs[j].name.span,
                                format!("{} defined here", self.defs[j].kind.keyword()),
                            )
                            .with_help(
                                "rename one of them to say which value the destination gets",
                            ),
                        );
                    }
                }
                continue;
            }
            match self.by_name.get(col.name.as_str()).copied() {
                Some(j)
                    if matches!(
                        self.defs[j].kind,
                        DefKind::Attribute(_) | DefKind::Feature(_)
                    ) =>
                {
                    self.edges[i].insert(j);
                    self.same_entity(j, &a.entity, col.span);
                }
                _ => {
                    let candidates = self.profile_names(&a.entity.name, false);
                    let all: Vec<&str> = candidates
                        .iter()
                        .copied()
                        .chain(keys.iter().copied())
                        .collect();
                    self.diags.push(
                        Diagnostic::error(
                            "unknown-name",
                            col.span,
                            format!(
                                "`{}` is not an attribute, feature or key of `{}`",
                                col.name, a.entity.name
                            ),
                        )
                        .with_suggestion(&col.name, all),
                    );
                }
            }
        }
    }

    fn check_bindings(&mut self, file: FileId, text: &str, config: &ProjectConfig) {
        let sources: Vec<&Definition> = self
            .defs
            .iter()
            .copied()
            .filter(|d| matches!(d.kind, DefKind::Source(_)))
            .collect();
        for s in &sources {
            if !config.sources.contains_key(&s.name.name) {
                self.diags.push(
                    Diagnostic::error(
                        "unbound-source",
                        s.name.span,
                        format!("source `{}` has no data binding in cdp.toml", s.name.name),
                    )
                    .with_help(format!(
                        "add a `[sources.{}]` table with `path = \"data/{}.csv\"` to cdp.toml",
                        s.name.name, s.name.name
                    )),
                );
            }
        }
        for name in config.sources.keys() {
            if !sources.iter().any(|s| &s.name.name == name) {
                self.diags.push(
                    Diagnostic::error(
                        "unknown-source",
                        config::header_span(text, file, name),
                        format!("cdp.toml binds `{name}`, but no source has that name"),
                    )
                    .with_suggestion(name, sources.iter().map(|s| s.name.name.as_str())),
                );
            }
        }
        for (name, mapping) in &config.ingest {
            let Some(source) = sources.iter().find_map(|d| match &d.kind {
                DefKind::Source(s) if &d.name.name == name => Some(s),
                _ => None,
            }) else {
                self.diags.push(
                    Diagnostic::error(
                        "unknown-source",
                        config::ingest_span(text, file, name, None),
                        format!("cdp.toml maps tracking events to `{name}`, but no source has that name"),
                    )
                    .with_suggestion(name, sources.iter().map(|s| s.name.name.as_str())),
                );
                continue;
            };
            for column in mapping.columns.keys() {
                if !source.columns.iter().any(|c| &c.name.name == column) {
                    self.diags.push(
                        Diagnostic::error(
                            "unknown-column",
                            config::ingest_span(text, file, name, Some(column)),
                            format!("source `{name}` has no column `{column}`"),
                        )
                        .with_suggestion(
                            column,
                            source.columns.iter().map(|c| c.name.name.as_str()),
                        ),
                    );
                }
            }
            // A row needs its event time and its key; other columns may stay empty.
            for (what, needed) in [("event time", &source.time), ("key", &source.key)] {
                if let Some(column) = needed {
                    if !mapping.columns.contains_key(&column.name) {
                        self.diags.push(
                            Diagnostic::error(
                                "config",
                                config::ingest_span(text, file, name, None),
                                format!(
                                    "the tracking events mapped to `{name}` leave its {what} column `{}` empty",
                                    column.name
                                ),
                            )
                            .with_help(format!(
                                "add `{} = \"{}\"` to [ingest.{name}.columns]",
                                column.name,
                                if what == "key" { "messageId" } else { "timestamp" }
                            )),
                        );
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ name helpers

    fn entity_ref(&mut self, name: &Ident) -> Option<usize> {
        self.lookup_kind(name, "entity", |k| matches!(k, DefKind::Entity(_)))
    }

    fn source_ref(&mut self, name: &Ident) -> Option<usize> {
        self.lookup_kind(name, "source", |k| matches!(k, DefKind::Source(_)))
    }

    /// Resolves a name that must denote a definition of one kind, reporting what it is instead.
    fn lookup_kind(
        &mut self,
        name: &Ident,
        kind: &str,
        is_kind: fn(&DefKind) -> bool,
    ) -> Option<usize> {
        match self.by_name.get(name.name.as_str()).copied() {
            Some(i) if is_kind(&self.defs[i].kind) => Some(i),
            Some(i) => {
                let actual = self.defs[i].kind.keyword();
                self.diags.push(
                    Diagnostic::error(
                        "wrong-kind",
                        name.span,
                        format!(
                            "`{}` is {} {actual}, not {} {kind}",
                            name.name,
                            article(actual),
                            article(kind)
                        ),
                    )
                    .with_related(self.defs[i].name.span, format!("{actual} defined here")),
                );
                None
            }
            None => {
                let candidates: Vec<&str> = self
                    .defs
                    .iter()
                    .filter(|d| is_kind(&d.kind))
                    .map(|d| d.name.name.as_str())
                    .collect();
                let mut diag = Diagnostic::error(
                    "unknown-name",
                    name.span,
                    format!("unknown {kind} `{}`", name.name),
                )
                .with_suggestion(&name.name, candidates.iter().copied());
                if diag.help.is_none() && candidates.is_empty() {
                    diag = diag.with_help(format!("no {kind} is defined in this project"));
                }
                self.diags.push(diag);
                None
            }
        }
    }

    /// Reports a reference to a definition of another entity.
    fn same_entity(&mut self, target: usize, entity: &Ident, at: Span) {
        // When `of <entity>` itself does not resolve, that error says it all.
        let resolves = self
            .by_name
            .get(entity.name.as_str())
            .is_some_and(|&e| matches!(self.defs[e].kind, DefKind::Entity(_)));
        if !resolves {
            return;
        }
        let def = self.defs[target];
        if let Some(other) = def.kind.entity() {
            if other.name != entity.name && !entity.name.is_empty() {
                self.diags.push(
                    Diagnostic::error(
                        "wrong-entity",
                        at,
                        format!(
                            "{} `{}` belongs to entity `{}`, not `{}`",
                            def.kind.keyword(),
                            def.name.name,
                            other.name,
                            entity.name
                        ),
                    )
                    .with_related(other.span, "declared here"),
                );
            }
        }
    }

    /// Names of attributes, features (and segments) of an entity: did-you-mean candidates.
    fn profile_names(&self, entity: &str, segments: bool) -> Vec<&'a str> {
        self.defs
            .iter()
            .filter(|d| match &d.kind {
                DefKind::Attribute(a) => a.entity.name == entity,
                DefKind::Feature(f) => f.entity.name == entity,
                DefKind::Segment(s) => segments && s.entity.name == entity,
                _ => false,
            })
            .map(|d| d.name.name.as_str())
            .collect()
    }

    fn column(&self, source: usize, name: &str) -> Option<Type> {
        let DefKind::Source(s) = &self.defs[source].kind else {
            return None;
        };
        s.columns
            .iter()
            .find(|c| c.name.name == name)
            .map(|c| Type::from_ast(&c.ty))
    }

    fn unknown_source_column(&mut self, source: usize, name: &Ident) {
        let def = self.defs[source];
        let DefKind::Source(s) = &def.kind else {
            return;
        };
        self.unknown_column(name, def, s);
    }

    /// The source a behavior reads, if the behavior and its source resolve.
    fn behavior_source(&self, behavior: usize) -> Option<usize> {
        let DefKind::Behavior(b) = &self.defs[behavior].kind else {
            return None;
        };
        let src = self.by_name.get(b.source.name.as_str()).copied()?;
        matches!(self.defs[src].kind, DefKind::Source(_)).then_some(src)
    }

    fn expect_bool(&mut self, t: &Type, e: &Expr, what: &str) {
        if !t.is_lenient() && t != &Type::Bool {
            self.diags.push(
                Diagnostic::error(
                    "type",
                    e.span,
                    match describe_expr(e).as_str() {
                        "the value" => {
                            format!("{what} must be true or false (bool), but it is {t}")
                        }
                        shown => {
                            format!("{what} must be true or false (bool), but `{shown}` is {t}")
                        }
                    },
                )
                .with_help("compare it, e.g. `> 0`, or test it with `is set`"),
            );
        }
    }

    fn positive_duration(&mut self, d: &ast::Duration, what: &str) {
        if d.amount == 0 {
            self.diags.push(Diagnostic::error(
                "bad-duration",
                d.span,
                format!("{what} needs a duration above zero"),
            ));
        }
    }

    // ------------------------------------------------------------------ expressions

    fn expr(&mut self, e: &Expr, cx: &Cx<'a>) -> Type {
        let t = self.expr_inner(e, cx);
        self.expr_types.insert(e.span, t.clone());
        t
    }

    fn expr_inner(&mut self, e: &Expr, cx: &Cx<'a>) -> Type {
        match &e.kind {
            ExprKind::Null => Type::Null,
            ExprKind::Bool(_) => Type::Bool,
            ExprKind::Number(n) => {
                if n.contains('.') {
                    let scale = n.split('.').nth(1).map_or(0, str::len) as u32;
                    let precision = (n.len() as u32 - 1).clamp(scale.max(1), 38);
                    Type::Decimal {
                        precision,
                        scale: scale.min(precision),
                    }
                } else if n.parse::<i64>().is_ok() {
                    Type::Int
                } else {
                    self.diags.push(Diagnostic::error(
                        "bad-literal",
                        e.span,
                        "integer literal does not fit in 64 bits",
                    ));
                    Type::Error
                }
            }
            ExprKind::String(_) => Type::String,
            ExprKind::Duration(_) => Type::Duration,
            ExprKind::Date(s) => {
                if s.contains([' ', 'T']) || config::parse_timestamp(s).is_none() {
                    self.diags.push(
                        Diagnostic::error("bad-literal", e.span, format!("`{s}` is not a date"))
                            .with_help("write dates as date \"2024-12-01\""),
                    );
                }
                Type::Date
            }
            ExprKind::Timestamp(s) => {
                if config::parse_timestamp(s).is_none() {
                    self.diags.push(
                        Diagnostic::error(
                            "bad-literal",
                            e.span,
                            format!("`{s}` is not a timestamp"),
                        )
                        .with_help("write timestamps as timestamp \"2024-12-01 00:00:00\""),
                    );
                }
                Type::Timestamp
            }
            ExprKind::List(items) => {
                let mut t = Type::Null;
                for item in items {
                    let it = self.expr(item, cx);
                    match t.unify(&it) {
                        Some(u) => t = u,
                        None => {
                            self.diags.push(Diagnostic::error(
                                "type",
                                item.span,
                                format!("list mixes {t} and {it}"),
                            ));
                            t = Type::Error;
                        }
                    }
                }
                Type::List(Box::new(t))
            }
            ExprKind::Path(parts) => self.path(parts, e.span, cx),
            ExprKind::Call(call) => self.call(call, e.span, cx),
            ExprKind::Paren(inner) => self.expr(inner, cx),
            ExprKind::Unary { op, operand } => {
                let t = self.expr(operand, cx);
                match op {
                    UnaryOp::Not => {
                        self.expect_bool(&t, operand, "the operand of `not`");
                        Type::Bool
                    }
                    UnaryOp::Neg => {
                        if !t.is_lenient() && !t.is_numeric() && t != Type::Duration {
                            self.diags.push(Diagnostic::error(
                                "type",
                                e.span,
                                format!("cannot negate {t}"),
                            ));
                            return Type::Error;
                        }
                        t
                    }
                }
            }
            ExprKind::Binary { op, left, right } => {
                let l = self.expr(left, cx);
                let r = self.expr(right, cx);
                use ast::BinaryOp as B;
                match op {
                    B::And | B::Or => {
                        let word = if *op == B::And { "and" } else { "or" };
                        self.expect_bool(&l, left, &format!("the left side of `{word}`"));
                        self.expect_bool(&r, right, &format!("the right side of `{word}`"));
                        Type::Bool
                    }
                    B::Eq | B::Ne | B::Lt | B::Le | B::Gt | B::Ge => {
                        if matches!(left.kind, ExprKind::Null)
                            || matches!(right.kind, ExprKind::Null)
                        {
                            self.diags.push(
                                Diagnostic::warning(
                                    "null-comparison",
                                    e.span,
                                    "a comparison with null is never true",
                                )
                                .with_help(if *op == B::Ne {
                                    "use `is not null`"
                                } else {
                                    "use `is null`"
                                }),
                            );
                        }
                        if !l.comparable(&r) {
                            self.diags.push(
                                Diagnostic::error(
                                    "type",
                                    e.span,
                                    format!("cannot compare {l} with {r}"),
                                )
                                .with_related(left.span, format!("this is {l}"))
                                .with_related(right.span, format!("this is {r}")),
                            );
                        } else if !matches!(op, B::Eq | B::Ne)
                            && (!l.ordered() || !r.ordered())
                            && !l.is_lenient()
                            && !r.is_lenient()
                        {
                            self.diags.push(Diagnostic::error(
                                "type",
                                e.span,
                                format!("{l} values have no order; only `=` and `!=` compare them"),
                            ));
                        }
                        Type::Bool
                    }
                    _ => match arithmetic(*op, &l, &r) {
                        Ok(t) => t,
                        Err(msg) => {
                            self.diags.push(
                                Diagnostic::error("type", e.span, msg)
                                    .with_related(left.span, format!("this is {l}"))
                                    .with_related(right.span, format!("this is {r}")),
                            );
                            Type::Error
                        }
                    },
                }
            }
            ExprKind::Predicate {
                subject, predicate, ..
            } => {
                let s = self.expr(subject, cx);
                self.predicate(&s, subject, predicate, e.span, cx);
                Type::Bool
            }
            ExprKind::Sequence(seq) => {
                self.sequence(seq, e.span, cx);
                Type::Bool
            }
        }
    }

    fn predicate(
        &mut self,
        s: &Type,
        subject: &Expr,
        predicate: &Predicate,
        span: Span,
        cx: &Cx<'a>,
    ) {
        let need = |this: &mut Self, ok: bool, what: &str| {
            if !ok && !s.is_lenient() {
                this.diags.push(
                    Diagnostic::error(
                        "type",
                        span,
                        format!("{what}, but `{}` is {s}", describe_expr(subject)),
                    )
                    .with_related(subject.span, format!("this is {s}")),
                );
            }
        };
        match predicate {
            Predicate::IsNull | Predicate::IsSet => {}
            Predicate::In(items) => {
                for item in items {
                    let t = self.expr(item, cx);
                    if !s.comparable(&t) {
                        self.diags.push(Diagnostic::error(
                            "type",
                            item.span,
                            format!("cannot compare {s} with {t} in `in`"),
                        ));
                    }
                }
            }
            Predicate::Between(lo, hi) => {
                need(self, s.ordered(), "`between` needs ordered values");
                for bound in [lo, hi] {
                    let t = self.expr(bound, cx);
                    if !s.comparable(&t) {
                        self.diags.push(Diagnostic::error(
                            "type",
                            bound.span,
                            format!("cannot compare {s} with {t}"),
                        ));
                    }
                }
            }
            Predicate::Contains(x) => {
                let t = self.expr(x, cx);
                match s {
                    Type::List(el) => {
                        if !el.comparable(&t) {
                            self.diags.push(Diagnostic::error(
                                "type",
                                x.span,
                                format!("a list of {el} cannot contain {t}"),
                            ));
                        }
                    }
                    _ => {
                        need(
                            self,
                            *s == Type::String,
                            "`contains` needs a string or a list",
                        );
                        self.expect_string(&t, x);
                    }
                }
            }
            Predicate::StartsWith(x) | Predicate::EndsWith(x) | Predicate::Matches(x) => {
                let word = match predicate {
                    Predicate::StartsWith(_) => "`starts with`",
                    Predicate::EndsWith(_) => "`ends with`",
                    _ => "`matches`",
                };
                need(self, *s == Type::String, &format!("{word} needs a string"));
                let t = self.expr(x, cx);
                self.expect_string(&t, x);
            }
            Predicate::WithinLast(d) => {
                need(
                    self,
                    s.is_temporal(),
                    "`within last` needs a date or timestamp",
                );
                self.positive_duration(d, "`within last`");
            }
            Predicate::Before(x) | Predicate::After(x) => {
                let word = if matches!(predicate, Predicate::Before(_)) {
                    "`before`"
                } else {
                    "`after`"
                };
                need(
                    self,
                    s.is_temporal(),
                    &format!("{word} needs a date or timestamp"),
                );
                let t = self.expr(x, cx);
                if !t.is_lenient() && !t.is_temporal() {
                    self.diags.push(Diagnostic::error(
                        "type",
                        x.span,
                        format!("{word} needs a date or timestamp to compare with, this is {t}"),
                    ));
                }
            }
        }
    }

    fn expect_string(&mut self, t: &Type, e: &Expr) {
        if !t.is_lenient() && t != &Type::String {
            self.diags.push(Diagnostic::error(
                "type",
                e.span,
                format!("expected a string, this is {t}"),
            ));
        }
    }

    fn path(&mut self, parts: &[Ident], span: Span, cx: &Cx<'a>) -> Type {
        match cx.scope {
            Scope::KeyValue { key } => {
                if parts.len() == 1 && parts[0].name == key {
                    Type::String
                } else {
                    self.diags.push(
                        Diagnostic::error(
                            "unknown-name",
                            span,
                            format!("`normalize` of key `{key}` can only read `{key}`"),
                        )
                        .with_help(format!("e.g. `normalize lower(trim({key}))`")),
                    );
                    Type::Error
                }
            }
            Scope::Columns { source, qualifier } => {
                let col = match parts {
                    [c] => c,
                    [q, c]
                        if Some(q.name.as_str()) == qualifier
                            || q.name == self.defs[source].name.name =>
                    {
                        c
                    }
                    [q, _] => {
                        self.diags.push(
                            Diagnostic::error(
                                "unknown-name",
                                q.span,
                                format!("`{}` is not available here", q.name),
                            )
                            .with_help(format!(
                                "only the columns of `{}` can be read here",
                                self.defs[source].name.name
                            )),
                        );
                        return Type::Error;
                    }
                    _ => return Type::Error,
                };
                match self.column(source, &col.name) {
                    Some(t) => t,
                    None => {
                        self.unknown_source_column(source, col);
                        Type::Error
                    }
                }
            }
            Scope::Attribute { entity } => {
                if let [q, c] = parts {
                    if let Some(src) = self.by_name.get(q.name.as_str()).copied() {
                        if matches!(self.defs[src].kind, DefKind::Source(_)) {
                            return self.attribute_column(cx.owner, entity, src, q, c);
                        }
                    }
                }
                if let Some(first) = parts.first() {
                    self.attribute_profile_ref.get_or_insert(first.span);
                }
                self.profile_path(parts, span, entity, cx)
            }
            Scope::Profile { entity } => self.profile_path(parts, span, entity, cx),
        }
    }

    fn attribute_column(
        &mut self,
        owner: usize,
        entity: &str,
        src: usize,
        q: &Ident,
        c: &Ident,
    ) -> Type {
        self.edges[owner].insert(src);
        match self.attribute_source {
            Some((other, other_span)) if other != src => {
                self.diags.push(
                    Diagnostic::error(
                        "attribute-mix",
                        q.span,
                        "an attribute reads the columns of one source",
                    )
                    .with_related(other_span, "another source is read here")
                    .with_help("define one attribute per source and combine them in a feature"),
                );
            }
            Some(_) => {}
            None => self.attribute_source = Some((src, q.span)),
        }
        let linked = match self.by_name.get(entity).map(|&e| &self.defs[e].kind) {
            Some(DefKind::Entity(e)) => e.from.iter().any(|f| f.source.name == q.name),
            _ => true,
        };
        if !linked {
            self.diags.push(
                Diagnostic::error(
                    "unlinked-source",
                    q.span,
                    format!("source `{}` is not linked to entity `{entity}`", q.name),
                )
                .with_help(format!(
                    "add `from {} {{ <key> = <column> }}` to entity `{entity}`",
                    q.name
                )),
            );
        }
        match self.column(src, &c.name) {
            Some(t) => t,
            None => {
                self.unknown_source_column(src, c);
                Type::Error
            }
        }
    }

    /// A name in a profile expression: an attribute, feature or segment of the entity.
    fn profile_path(&mut self, parts: &[Ident], span: Span, entity: &'a str, cx: &Cx<'a>) -> Type {
        let name = match parts {
            [n] => n,
            [q, n] if q.name == entity => n,
            [q, n] => {
                return match self
                    .by_name
                    .get(q.name.as_str())
                    .map(|&i| &self.defs[i].kind)
                {
                    Some(DefKind::Behavior(_)) => {
                        self.diags.push(
                            Diagnostic::error(
                                "behavior-value",
                                span,
                                format!(
                                    "`{}.{}` is a value of each `{}` event, not of the profile",
                                    q.name, n.name, q.name
                                ),
                            )
                            .with_help(format!(
                                "aggregate it, e.g. `last({}.{})` or `sum({}.{})`",
                                q.name, n.name, q.name, n.name
                            )),
                        );
                        Type::Error
                    }
                    Some(DefKind::Source(_)) => {
                        self.diags.push(
                            Diagnostic::error("source-in-feature", span, format!("`{}` is a source; features and segments read attributes and behaviors", q.name))
                                .with_help(format!("define an `attribute` reading `{}.{}`, or a `behavior` over `{}`", q.name, n.name, q.name)),
                        );
                        Type::Error
                    }
                    _ => {
                        self.diags.push(
                            Diagnostic::error(
                                "unknown-name",
                                q.span,
                                format!("unknown name `{}`", q.name),
                            )
                            .with_suggestion(&q.name, std::iter::once(entity)),
                        );
                        Type::Error
                    }
                };
            }
            _ => return Type::Error,
        };
        let Some(i) = self.by_name.get(name.name.as_str()).copied() else {
            let candidates = self.profile_names(entity, true);
            let mut diag = Diagnostic::error(
                "unknown-name",
                name.span,
                format!("unknown name `{}`", name.name),
            )
            .with_label(format!(
                "not an attribute, feature or segment of `{entity}`"
            ))
            .with_suggestion(&name.name, candidates);
            if name.name == "now" {
                diag = diag.with_help("the as-of time is `now()`");
            }
            self.diags.push(diag);
            return Type::Error;
        };
        let def = self.defs[i];
        match &def.kind {
            DefKind::Attribute(_) | DefKind::Feature(_) | DefKind::Segment(_) => {
                self.edges[cx.owner].insert(i);
                self.same_entity(
                    i,
                    &ast::Ident {
                        name: entity.to_string(),
                        span,
                    },
                    name.span,
                );
                self.types.get(&i).cloned().unwrap_or(Type::Error)
            }
            DefKind::Behavior(_) => {
                self.diags.push(
                    Diagnostic::error(
                        "behavior-value",
                        name.span,
                        format!(
                            "`{}` is a behavior, a stream of events, not one value",
                            name.name
                        ),
                    )
                    .with_help(format!(
                        "aggregate it, e.g. `count({}) over 30d`",
                        name.name
                    )),
                );
                Type::Error
            }
            DefKind::Source(_) => {
                self.diags.push(
                    Diagnostic::error(
                        "source-in-feature",
                        name.span,
                        format!("`{}` is a source; it has no value per profile", name.name),
                    )
                    .with_help("define an `attribute` or a `behavior` over it"),
                );
                Type::Error
            }
            other => {
                self.diags.push(
                    Diagnostic::error(
                        "wrong-kind",
                        name.span,
                        format!(
                            "`{}` is {} {} and has no value",
                            name.name,
                            article(other.keyword()),
                            other.keyword()
                        ),
                    )
                    .with_related(def.name.span, format!("{} defined here", other.keyword())),
                );
                Type::Error
            }
        }
    }

    fn call(&mut self, call: &Call, span: Span, cx: &Cx<'a>) -> Type {
        let name = call.function.name.as_str();
        if let Some(agg) = Aggregate::from_name(name) {
            return self.aggregate(agg, call, span, cx);
        }
        let Some(func) = Function::from_name(name) else {
            let candidates = Function::ALL
                .iter()
                .map(|f| f.name())
                .chain(Aggregate::ALL.iter().map(|a| a.name()));
            self.diags.push(
                Diagnostic::error(
                    "unknown-function",
                    call.function.span,
                    format!("unknown function `{name}`"),
                )
                .with_suggestion(name, candidates),
            );
            for a in &call.args {
                self.expr(a, cx);
            }
            return Type::Error;
        };
        if let Some(w) = &call.window {
            self.diags.push(
                Diagnostic::error(
                    "window-misuse",
                    w.span,
                    format!("`over {w}` applies to aggregates; `{name}` is a scalar function"),
                )
                .with_help("windows follow an aggregate, e.g. `count(purchase) over 30d`"),
            );
        }
        if let Some(f) = &call.filter {
            self.diags.push(Diagnostic::error(
                "filter-misuse",
                f.span,
                format!("`where` applies to aggregates; `{name}` is a scalar function"),
            ));
        }
        let args: Vec<Type> = call.args.iter().map(|a| self.expr(a, cx)).collect();
        match func.result_type(&args) {
            Ok(t) => t,
            Err(msg) => {
                self.diags.push(Diagnostic::error("type", span, msg));
                Type::Error
            }
        }
    }

    fn aggregate(&mut self, agg: Aggregate, call: &Call, span: Span, cx: &Cx<'a>) -> Type {
        let fname = agg.name();
        if !cx.aggregates {
            self.diags.push(
                Diagnostic::error(
                    "aggregate-misuse",
                    call.function.span,
                    format!("aggregate `{fname}` is not allowed here"),
                )
                .with_note(cx.no_aggregate_reason.to_string()),
            );
            return Type::Error;
        }
        if cx.metric
            && !matches!(
                agg,
                Aggregate::Count
                    | Aggregate::Sum
                    | Aggregate::Avg
                    | Aggregate::Min
                    | Aggregate::Max
                    | Aggregate::CountDistinct
                    | Aggregate::ApproxCountDistinct
            )
        {
            self.diags.push(
                Diagnostic::error("metric-measures", call.function.span, format!("`{fname}` does not summarize a group; a measure uses count, sum, avg, min, max, count_distinct or approx_count_distinct"))
            );
            return Type::Error;
        }
        if let Some(w) = &call.window {
            self.positive_duration(w, "a window");
            if cx.metric {
                self.diags.push(
                    Diagnostic::error(
                        "window-misuse",
                        w.span,
                        "a metric's measures are computed per grain period; they take no window",
                    )
                    .with_help("set the period with `grain 1d`"),
                );
            }
        }
        let expected_args = if agg.takes_k() { 2 } else { 1 };
        if call.args.len() != expected_args {
            let example = if agg.takes_k() {
                format!("{fname}(purchase.product_id, 5)")
            } else if agg.needs_value() {
                format!("{fname}(purchase.amount)")
            } else {
                "count(purchase)".to_string()
            };
            self.diags.push(
                Diagnostic::error(
                    "arity",
                    span,
                    format!(
                        "`{fname}` takes {expected_args} argument{}, found {}",
                        if expected_args == 1 { "" } else { "s" },
                        call.args.len()
                    ),
                )
                .with_help(format!("e.g. `{example}`")),
            );
            return Type::Error;
        }
        if agg.takes_k() {
            let k = &call.args[1];
            let ok = matches!(&k.kind, ExprKind::Number(n) if n.parse::<u32>().is_ok_and(|v| (1..=1000).contains(&v)));
            if !ok {
                self.diags.push(Diagnostic::error(
                    "arity",
                    k.span,
                    format!("the `k` of `{fname}` must be a whole number from 1 to 1000"),
                ));
            }
        }
        let arg = &call.args[0];
        // What the aggregate reads: the events of one behavior, or (in metrics) profiles.
        let target = self.aggregate_target(arg, cx);
        let (value_type, behavior) = match target {
            AggTarget::Error => return Type::Error,
            AggTarget::Events(b) => (None, Some(b)),
            AggTarget::Value(t, b) => (Some(t), b),
            AggTarget::Profiles => {
                if agg != Aggregate::Count {
                    self.diags.push(Diagnostic::error(
                        "type",
                        arg.span,
                        format!("`{fname}` of the entity itself has no meaning; use `count`"),
                    ));
                    return Type::Error;
                }
                (None, None)
            }
        };
        if behavior.is_none() {
            if let Some(w) = &call.window {
                if !cx.metric {
                    self.diags.push(
                        Diagnostic::error(
                            "window-on-attribute",
                            w.span,
                            "only behaviors have events to window",
                        )
                        .with_label("this aggregate reads no behavior"),
                    );
                }
            }
        }
        if let Some(filter) = &call.filter {
            match behavior {
                Some(b) => {
                    if let Some(src) = self.behavior_source(b) {
                        let fcx = Cx {
                            scope: Scope::Columns {
                                source: src,
                                qualifier: Some(&self.defs[b].name.name),
                            },
                            aggregates: false,
                            metric: false,
                            no_aggregate_reason: "an aggregate's `where` is applied event by event",
                            ..*cx
                        };
                        let t = self.expr(filter, &fcx);
                        self.expect_bool(&t, filter, "an aggregate's `where`");
                    }
                }
                None => self.diags.push(Diagnostic::error(
                    "filter-misuse",
                    filter.span,
                    "`where` filters a behavior's events; this aggregate reads no behavior",
                )),
            }
        }
        match agg.result_type(value_type.as_ref()) {
            Ok(t) => t,
            Err(msg) => {
                self.diags.push(Diagnostic::error("type", arg.span, msg));
                Type::Error
            }
        }
    }

    /// Classifies an aggregate's first argument: a behavior's events, a value per event of one
    /// behavior, or (in metrics) the profiles of a segment.
    fn aggregate_target(&mut self, arg: &Expr, cx: &Cx<'a>) -> AggTarget {
        let Scope::Profile { entity } = cx.scope else {
            return AggTarget::Error;
        };
        if let ExprKind::Path(parts) = &arg.kind {
            if let [only] = parts.as_slice() {
                match self
                    .by_name
                    .get(only.name.as_str())
                    .map(|&i| (i, &self.defs[i].kind))
                {
                    Some((b, DefKind::Behavior(_))) => {
                        self.edges[cx.owner].insert(b);
                        self.same_entity(
                            b,
                            &ast::Ident {
                                name: entity.to_string(),
                                span: only.span,
                            },
                            only.span,
                        );
                        return AggTarget::Events(b);
                    }
                    Some((e, DefKind::Entity(_))) if cx.metric => {
                        if only.name != entity {
                            self.diags.push(Diagnostic::error(
                                "wrong-entity",
                                only.span,
                                format!("this metric counts `{entity}`, not `{}`", only.name),
                            ));
                        }
                        self.edges[cx.owner].insert(e);
                        return AggTarget::Profiles;
                    }
                    _ => {}
                }
            }
        }
        if contains_call_matching(arg, |c| Aggregate::from_name(&c.function.name).is_some()) {
            self.diags.push(
                Diagnostic::error("aggregate-of-aggregate", arg.span, "an aggregate cannot read another aggregate")
                    .with_help("define the inner aggregate as its own feature, then combine features with arithmetic"),
            );
            return AggTarget::Error;
        }
        // The value form: every path must be `behavior.column` of one behavior (or, in
        // metrics, profile values: attributes and features).
        let mut behavior: Option<(usize, &Ident)> = None;
        let mut profile: Option<&Ident> = None;
        let mut problem = false;
        visit_paths(arg, &mut |parts| {
            let head = &parts[0];
            match self
                .by_name
                .get(head.name.as_str())
                .map(|&i| (i, &self.defs[i].kind))
            {
                Some((b, DefKind::Behavior(_))) if parts.len() == 2 => match behavior {
                    Some((other, first)) if other != b => {
                        self.diags.push(
                            Diagnostic::error(
                                "aggregate-mix",
                                head.span,
                                format!(
                                    "an aggregate reads the events of one behavior, but this one reads `{}` and `{}`",
                                    first.name, head.name
                                ),
                            )
                            .with_related(first.span, "first behavior read here")
                            .with_help("aggregate each behavior in its own feature, then combine the features"),
                        );
                        problem = true;
                    }
                    _ => behavior = Some((b, head)),
                },
                Some((_, DefKind::Attribute(_) | DefKind::Feature(_))) if parts.len() == 1 => {
                    profile.get_or_insert(head);
                }
                _ => {}
            }
        });
        if problem {
            return AggTarget::Error;
        }
        match (behavior, profile) {
            (Some((b, head)), None) => {
                self.edges[cx.owner].insert(b);
                self.same_entity(
                    b,
                    &ast::Ident {
                        name: entity.to_string(),
                        span: head.span,
                    },
                    head.span,
                );
                let Some(src) = self.behavior_source(b) else {
                    return AggTarget::Error;
                };
                let vcx = Cx {
                    scope: Scope::Columns {
                        source: src,
                        qualifier: Some(&self.defs[b].name.name),
                    },
                    aggregates: false,
                    metric: false,
                    no_aggregate_reason: "",
                    ..*cx
                };
                let t = self.expr(arg, &vcx);
                AggTarget::Value(t, Some(b))
            }
            (None, Some(_)) if cx.metric => {
                let vcx = Cx {
                    aggregates: false,
                    metric: false,
                    no_aggregate_reason: "an aggregate cannot read another aggregate",
                    ..*cx
                };
                let t = self.expr(arg, &vcx);
                AggTarget::Value(t, None)
            }
            (None, Some(p)) | (Some(_), Some(p)) => {
                let kind = self
                    .by_name
                    .get(p.name.as_str())
                    .map_or("attribute", |&i| self.defs[i].kind.keyword());
                self.diags.push(
                    Diagnostic::error(
                        if kind == "attribute" { "window-on-attribute" } else { "aggregate-of-aggregate" },
                        p.span,
                        format!("`{}` is {} {kind}: one value per profile, not a stream of events to aggregate", p.name, article(kind)),
                    )
                    .with_help(format!("aggregate a behavior's events instead (e.g. `count(purchase) over 30d`), or use `{}` directly", p.name)),
                );
                AggTarget::Error
            }
            (None, None) => {
                let candidates: Vec<&str> = self
                    .defs
                    .iter()
                    .filter(|d| matches!(d.kind, DefKind::Behavior(_)))
                    .map(|d| d.name.name.as_str())
                    .collect();
                let head = first_path(arg);
                let mut diag = Diagnostic::error(
                    "aggregate-target",
                    arg.span,
                    "an aggregate reads a behavior: `count(purchase)` or `sum(purchase.amount)`",
                );
                if let Some(h) = head {
                    if !self.by_name.contains_key(h.name.as_str()) {
                        diag = Diagnostic::error(
                            "unknown-name",
                            h.span,
                            format!("unknown behavior `{}`", h.name),
                        )
                        .with_suggestion(&h.name, candidates.iter().copied());
                    }
                }
                self.diags.push(diag);
                AggTarget::Error
            }
        }
    }

    fn sequence(&mut self, seq: &Sequence, span: Span, cx: &Cx<'a>) {
        let Scope::Profile { entity } = cx.scope else {
            self.diags.push(Diagnostic::error(
                "aggregate-misuse",
                span,
                "`did …` sequences are not allowed here: they read a profile's events, so they belong in features, segments and journeys",
            ));
            return;
        };
        if !cx.aggregates || cx.metric {
            self.diags.push(Diagnostic::error(
                "aggregate-misuse",
                span,
                "`did …` sequences are not allowed here: they read a profile's events, so they belong in features, segments and journeys",
            ));
            return;
        }
        if let Some(w) = &seq.window {
            self.positive_duration(w, "a window");
        }
        let steps =
            std::iter::once((&seq.first, None)).chain(seq.then.iter().map(|t| (&t.step, Some(t))));
        let last = seq.then.len();
        for (n, (step, then)) in steps.enumerate() {
            if let Some(t) = then {
                self.positive_duration(&t.within, "`within`");
                if t.negated && n != last {
                    self.diags.push(
                        Diagnostic::error(
                            "sequence-not",
                            t.span,
                            "`then not …` can only be the last step of a sequence",
                        )
                        .with_help(
                            "split the condition: `did a then not b within 1d` combined with `and`",
                        ),
                    );
                }
            }
            let Some(b) = self.lookup_kind(&step.behavior, "behavior", |k| {
                matches!(k, DefKind::Behavior(_))
            }) else {
                continue;
            };
            self.edges[cx.owner].insert(b);
            self.same_entity(
                b,
                &ast::Ident {
                    name: entity.to_string(),
                    span: step.behavior.span,
                },
                step.behavior.span,
            );
            if let (Some(filter), Some(src)) = (&step.filter, self.behavior_source(b)) {
                let fcx = Cx {
                    scope: Scope::Columns {
                        source: src,
                        qualifier: Some(&self.defs[b].name.name),
                    },
                    aggregates: false,
                    metric: false,
                    no_aggregate_reason: "a sequence step's `where` is applied event by event",
                    ..*cx
                };
                let t = self.expr(filter, &fcx);
                self.expect_bool(&t, filter, "a sequence step's `where`");
            }
        }
    }
}

enum AggTarget {
    Error,
    /// `count(purchase)`: the events themselves.
    Events(usize),
    /// A value per event of a behavior, or per profile in metrics.
    Value(Type, Option<usize>),
    /// `count(customer)` in a metric: the segment's population.
    Profiles,
}

// ------------------------------------------------------------------ syntactic helpers

/// Names a definition mentions, found without resolving anything: used to order checking.
/// Inside aggregate filters and as qualifiers of `behavior.column` names denote columns or
/// behaviors, never attributes/features, so they do not order anything.
fn syntactic_refs<'d>(def: &'d Definition, out: &mut Vec<(Option<&'d str>, &'d str)>) {
    let mut exprs: Vec<&Expr> = Vec::new();
    match &def.kind {
        DefKind::Attribute(a) => exprs.push(&a.value),
        DefKind::Feature(f) => exprs.push(&f.value),
        DefKind::Segment(s) => exprs.push(&s.condition),
        _ => return,
    }
    while let Some(e) = exprs.pop() {
        match &e.kind {
            ExprKind::Path(parts) => match parts.as_slice() {
                [only] => out.push((None, &only.name)),
                [q, name] => out.push((Some(&q.name), &name.name)),
                _ => {}
            },
            ExprKind::Call(c) => exprs.extend(c.args.iter()),
            _ => push_children(e, &mut exprs),
        }
    }
}

/// Direct sub-expressions, except the event-level ones (filters, sequence steps).
fn push_children<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match &e.kind {
        ExprKind::List(items) => out.extend(items.iter()),
        ExprKind::Call(c) => out.extend(c.args.iter()),
        ExprKind::Unary { operand, .. } | ExprKind::Paren(operand) => out.push(operand),
        ExprKind::Binary { left, right, .. } => {
            out.push(left);
            out.push(right);
        }
        ExprKind::Predicate {
            subject, predicate, ..
        } => {
            out.push(subject);
            match predicate {
                Predicate::In(items) => out.extend(items.iter()),
                Predicate::Between(a, b) => {
                    out.push(a);
                    out.push(b);
                }
                Predicate::Contains(x)
                | Predicate::StartsWith(x)
                | Predicate::EndsWith(x)
                | Predicate::Matches(x)
                | Predicate::Before(x)
                | Predicate::After(x) => out.push(x),
                Predicate::IsNull | Predicate::IsSet | Predicate::WithinLast(_) => {}
            }
        }
        _ => {}
    }
}

fn visit_paths<'e>(e: &'e Expr, f: &mut impl FnMut(&'e [Ident])) {
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        if let ExprKind::Path(parts) = &e.kind {
            f(parts);
        }
        push_children(e, &mut stack);
    }
}

fn first_path(e: &Expr) -> Option<&Ident> {
    let mut found = None;
    visit_paths(e, &mut |parts| {
        found.get_or_insert(&parts[0]);
    });
    found
}

fn contains_call(e: &Expr) -> bool {
    contains_call_matching(e, |_| true)
}

fn contains_call_matching(e: &Expr, pred: impl Fn(&Call) -> bool) -> bool {
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        if let ExprKind::Call(c) = &e.kind {
            if pred(c) {
                return true;
            }
        }
        push_children(e, &mut stack);
    }
    false
}

/// "a" or "an", for messages that name a kind of definition.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn describe_expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Path(parts) => parts
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join("."),
        ExprKind::Call(c) => format!("{}(…)", c.function.name),
        _ => "the value".to_string(),
    }
}

/// Strongly connected components (Tarjan, iterative so deep graphs cannot overflow the stack).
fn tarjan(graph: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = graph.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut i)) = call.last_mut() {
            if let Some(&w) = graph[v].get(*i) {
                *i += 1;
                if index[w] == usize::MAX {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                call.pop();
                if let Some(&(parent, _)) = call.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut scc = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        scc.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(scc);
                }
            }
        }
    }
    out
}

/// A readable cycle through the members, starting and ending at the smallest one.
fn cycle_path(graph: &[Vec<usize>], members: &[usize]) -> Vec<usize> {
    let start = members[0];
    let in_scc = |v: usize| members.binary_search(&v).is_ok();
    // Breadth-first search back to `start` inside the component gives a shortest cycle.
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &graph[v] {
            if !in_scc(w) {
                continue;
            }
            if w == start {
                // Walk back from `v` to `start`, then read it forwards and close the loop.
                let mut path = vec![v];
                while let Some(&p) = prev.get(path.last().expect("non-empty")) {
                    path.push(p);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    vec![start, start]
}
