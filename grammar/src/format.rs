//! The canonical layout of `.cdp` files, as `cdp fmt` writes them: one way to print every
//! definition, keeping the user's comments and parentheses, such that formatting twice changes
//! nothing.
//!
//! Printing goes in three steps. The syntax tree becomes a tree of units — the pieces of output
//! that comments can attach to (a definition, a block item, a column, a step…), each with the
//! source range it came from and its lines in canonical order. Each comment is then placed on one
//! unit by source position: before it, after its last line, or before the closing brace of a block.
//! Last, the units are rendered with indentation. Comments travel with their unit when the
//! canonical order moves it, which is why placement works on units and not on output lines.

use crate::ast::*;
use crate::diag::{Diagnostic, Severity};
use crate::parser::parse_file;
use crate::span::{FileId, Span};

/// Lines longer than this make a segment condition break at its top-level `and`/`or`.
const MAX_WIDTH: usize = 100;
const INDENT: &str = "  ";

/// Words that a plain name cannot be (the grammar's `keyword` rule); such names need backticks.
pub const RESERVED_WORDS: [&str; 20] = [
    "and", "or", "not", "in", "is", "null", "true", "false", "between", "contains", "starts",
    "ends", "matches", "within", "before", "after", "over", "where", "did", "then",
];

/// Formats one file: the canonical text, or the file's errors when it does not parse.
///
/// The result is checked before it is returned: it must parse again, keep every comment and be
/// its own format. A file that fails the check is reported (as a bug of the formatter) rather than
/// rewritten, so `cdp fmt` never damages a file.
pub fn format_source(path_for_messages: &str, text: &str) -> Result<String, Vec<Diagnostic>> {
    let parsed = parse_file(FileId(0), text);
    if has_errors(&parsed.diagnostics) {
        return Err(parsed.diagnostics);
    }
    let out = print_file(&parsed.file, text);
    let again = parse_file(FileId(0), &out);
    let sound = !has_errors(&again.diagnostics)
        && again.file.definitions.len() == parsed.file.definitions.len()
        && comment_texts(&again.file) == comment_texts(&parsed.file)
        && print_file(&again.file, &out) == out;
    if sound {
        Ok(out)
    } else {
        Err(vec![Diagnostic::error(
            "formatter-bug",
            Span::new(FileId(0), 0, 0),
            format!(
                "`cdp fmt` could not format {path_for_messages} safely; the file is left unchanged"
            ),
        )
        .with_note(
            "the formatted text would not read back the same; this is a bug in the formatter",
        )])
    }
}

fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(|d| d.severity == Severity::Error)
}

fn comment_texts(file: &File) -> Vec<&str> {
    let mut texts: Vec<&str> = file.comments.iter().map(|c| c.text.as_str()).collect();
    texts.sort_unstable();
    texts
}

/// Prints a parsed file in the canonical layout. `source` is the text it was parsed from; the
/// comments' spans point into it, and it tells which comments share a line with code.
pub fn print_file(file: &File, source: &str) -> String {
    let mut root = Unit::group(
        (0, usize::MAX),
        file.definitions.iter().map(definition).collect(),
    );
    let mut comment_ranges: Vec<(usize, usize)> =
        file.comments.iter().map(|c| range(c.span)).collect();
    comment_ranges.sort_unstable();
    for def in &mut root.children {
        trim_spans(def, source, &comment_ranges);
    }
    for (index, comment) in file.comments.iter().enumerate() {
        place(&mut root, index, comment.span.start as usize, source, true);
    }
    let mut out = Out::default();
    let notes = Notes {
        comments: &file.comments,
        source,
    };
    for (i, def) in root.children.iter().enumerate() {
        if i > 0 {
            out.blank();
        }
        render(def, 0, &notes, &mut out);
    }
    for (i, &c) in root.dangling.iter().enumerate() {
        if i == 0 && !root.children.is_empty() {
            out.blank();
        }
        let last = i + 1 == root.dangling.len();
        notes.own_line(c, 0, !last, &mut out);
    }
    out.finish()
}

/// Prints one expression on one line, with the fewest parentheses its structure needs plus those
/// the user wrote.
pub fn print_expr(expr: &Expr) -> String {
    let mut out = String::new();
    write_expr(expr, 0, &mut out);
    out
}

// ------------------------------------------------------------------------------------ units

/// A piece of output that comments attach to, with the lines it prints.
#[derive(Debug, Default)]
struct Unit {
    /// Source byte range; comments inside it belong to this unit or to one of its children.
    span: (usize, usize),
    /// Indentation relative to the parent, in levels.
    indent: usize,
    /// Lines printed before the children.
    head: Vec<String>,
    children: Vec<Unit>,
    /// The closing line (`}`) of a block; dangling comments go just before it.
    tail: Option<&'static str>,
    /// Comments, by index into `File::comments`, as placement assigned them.
    leading: Vec<usize>,
    /// After the first line of a block (`stage s {  # …`).
    head_trailing: Vec<usize>,
    trailing: Vec<usize>,
    dangling: Vec<usize>,
    /// Comments inside a unit that has no place for them (inside an expression, say).
    inner: Vec<usize>,
}

impl Unit {
    fn line(span: Span, text: String) -> Unit {
        Unit {
            span: range(span),
            indent: 1,
            head: vec![text],
            ..Unit::default()
        }
    }

    fn block(span: Span, head: String, children: Vec<Unit>) -> Unit {
        Unit {
            span: range(span),
            indent: 1,
            head: vec![head],
            children,
            tail: Some("}"),
            ..Unit::default()
        }
    }

    fn group(span: (usize, usize), children: Vec<Unit>) -> Unit {
        Unit {
            span,
            children,
            ..Unit::default()
        }
    }
}

fn range(span: Span) -> (usize, usize) {
    (span.start as usize, span.end as usize)
}

/// The source range from the first to the last of some spans (empty lists have no range).
fn covering<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Span {
    let mut it = spans.into_iter();
    match it.next() {
        Some(first) => it.fold(*first, |acc, s| acc.to(*s)),
        None => Span::default(),
    }
}

fn definition(def: &Definition) -> Unit {
    let mut header = format!("{} {}", def.kind.keyword(), ident(&def.name.name));
    if let Some(entity) = def.kind.entity() {
        header.push_str(" of ");
        header.push_str(&ident(&entity.name));
    }
    if let Some(d) = &def.meta.description {
        header.push(' ');
        header.push_str(&string(&d.value));
    }
    let mut items = Vec::new();
    let value = match &def.kind {
        DefKind::Source(s) => {
            source_items(s, def.span, &mut items);
            None
        }
        DefKind::Entity(e) => {
            entity_items(e, &mut items);
            None
        }
        DefKind::Segment(s) => {
            items.push(Unit {
                span: range(s.condition.span),
                indent: 1,
                head: condition_lines(&s.condition, INDENT.len()),
                ..Unit::default()
            });
            None
        }
        DefKind::Journey(j) => {
            journey_items(j, &mut items);
            None
        }
        DefKind::Metric(m) => {
            metric_items(m, &mut items);
            None
        }
        DefKind::Activation(a) => {
            activation_items(a, &mut items);
            None
        }
        DefKind::Attribute(a) => {
            let mut text = format!(" = {}", print_expr(&a.value));
            let mut end = a.value.span;
            if let Some(pick) = &a.pick {
                let dir = if pick.latest { "latest" } else { "earliest" };
                text.push_str(&format!(" {dir} by {}", ident(&pick.by.name)));
                end = pick.span;
            }
            Some((text, end))
        }
        DefKind::Behavior(b) => {
            let mut text = format!(" = {}", ident(&b.source.name));
            let mut end = b.source.span;
            if let Some(filter) = &b.filter {
                text.push_str(" where ");
                text.push_str(&print_expr(filter));
                end = end.to(filter.span);
            }
            if let Some(at) = &b.at {
                text.push_str(" at ");
                text.push_str(&ident(&at.name));
                end = end.to(at.span);
            }
            Some((text, end))
        }
        DefKind::Feature(f) => Some((format!(" = {}", print_expr(&f.value)), f.value.span)),
    };
    let meta = meta_items(&def.meta);
    match value {
        // `=`-form: the header line is a unit of its own so that a comment after it stays there.
        Some((text, end)) => {
            // Too long for one line: the value goes on its own line, after `=`.
            let head = if header.chars().count() + text.chars().count() > MAX_WIDTH {
                vec![header + " =", format!("{INDENT}{}", &text[" = ".len()..])]
            } else {
                vec![header + &text]
            };
            let value_line = Unit {
                span: (def.span.start as usize, end.end as usize),
                head,
                ..Unit::default()
            };
            let mut children = vec![value_line];
            children.extend(meta);
            Unit::group(range(def.span), children)
        }
        None => {
            let mut children = meta;
            children.extend(items);
            Unit::block(def.span, header + " {", children)
        }
    }
}

fn meta_items(meta: &Meta) -> Vec<Unit> {
    let mut items = Vec::new();
    if let Some(owner) = &meta.owner {
        items.push(Unit::line(
            owner.span,
            format!("owner {}", string(&owner.value)),
        ));
    }
    if !meta.tags.is_empty() {
        let span = covering(meta.tags.iter().map(|t| &t.span));
        let tags: Vec<String> = meta.tags.iter().map(|t| string(&t.value)).collect();
        items.push(Unit::line(span, format!("tags [{}]", tags.join(", "))));
    }
    items
}

fn source_items(s: &Source, def_span: Span, items: &mut Vec<Unit>) {
    if let Some(key) = &s.key {
        items.push(Unit::line(key.span, format!("key {}", ident(&key.name))));
    }
    if let Some(time) = &s.time {
        items.push(Unit::line(time.span, format!("time {}", ident(&time.name))));
    }
    // Without columns the parser points `columns_span` at the definition; a block the user
    // wrote empty is kept (with any comment inside it).
    if !s.columns.is_empty() || s.columns_span != def_span {
        let columns = s.columns.iter().map(column).collect();
        items.push(Unit::block(s.columns_span, "columns {".into(), columns));
    }
}

fn column(c: &Column) -> Unit {
    // A column named `pii` would be read as the previous column's `pii` mark.
    let name = if c.name.name == "pii" {
        "`pii`".to_string()
    } else {
        ident(&c.name.name)
    };
    let mut text = format!("{name}: {}", type_expr(&c.ty));
    if c.nullable {
        text.push('?');
    }
    if c.pii {
        text.push_str(" pii");
    }
    if let Some(d) = &c.description {
        text.push(' ');
        text.push_str(&string(&d.value));
    }
    Unit::line(c.span, text)
}

fn type_expr(t: &TypeExpr) -> String {
    match &t.kind {
        TypeKind::String => "string".into(),
        TypeKind::Int => "int".into(),
        TypeKind::Float => "float".into(),
        TypeKind::Bool => "bool".into(),
        TypeKind::Date => "date".into(),
        TypeKind::Timestamp => "timestamp".into(),
        TypeKind::Duration => "duration".into(),
        TypeKind::Decimal { precision, scale } => format!("decimal({precision}, {scale})"),
        TypeKind::List(inner) => format!("list<{}>", type_expr(inner)),
    }
}

fn entity_items(e: &Entity, items: &mut Vec<Unit>) {
    for key in &e.keys {
        let mut text = format!("key {}", ident(&key.name.name));
        if let Some(n) = &key.normalize {
            text.push_str(" normalize ");
            text.push_str(&print_expr(n));
        }
        if !key.exclude.is_empty() {
            let values: Vec<String> = key.exclude.iter().map(|s| string(&s.value)).collect();
            text.push_str(&format!(" exclude [{}]", values.join(", ")));
        }
        if let Some((n, _)) = key.max_per_profile {
            text.push_str(&format!(" max {n} per profile"));
        }
        if let Some((n, _)) = key.priority {
            text.push_str(&format!(" priority {n}"));
        }
        items.push(Unit::line(key.span, text));
    }
    for from in &e.from {
        let bindings: Vec<String> = from
            .bindings
            .iter()
            .map(|b| format!("{} = {}", ident(&b.key.name), print_expr(&b.value)))
            .collect();
        let body = if bindings.is_empty() {
            "{}".to_string()
        } else {
            format!("{{ {} }}", bindings.join(", "))
        };
        items.push(Unit::line(
            from.span,
            format!("from {} {body}", ident(&from.source.name)),
        ));
    }
}

fn journey_items(j: &Journey, items: &mut Vec<Unit>) {
    for (word, e) in [("entry", &j.entry), ("goal", &j.goal), ("exit", &j.exit)] {
        if let Some(e) = e {
            items.push(Unit::line(e.span, format!("{word} {}", print_expr(e))));
        }
    }
    if let Some(r) = &j.reentry {
        let policy = match &r.policy {
            ReentryPolicy::Never => "never".to_string(),
            ReentryPolicy::Always => "always".to_string(),
            ReentryPolicy::After(d) => format!("after {d}"),
        };
        items.push(Unit::line(r.span, format!("reentry {policy}")));
    }
    for stage in &j.stages {
        let mut head = format!("stage {}", ident(&stage.name.name));
        if let Some(d) = &stage.description {
            head.push(' ');
            head.push_str(&string(&d.value));
        }
        head.push_str(" {");
        let steps = stage.steps.iter().map(step).collect();
        items.push(Unit::block(stage.span, head, steps));
    }
}

fn step(s: &Step) -> Unit {
    let text = match &s.kind {
        StepKind::Activate(a) => format!("activate {}", ident(&a.name)),
        StepKind::Wait(d) => format!("wait {d}"),
        StepKind::WaitUntil { condition, timeout } => {
            format!("wait until {} timeout {timeout}", print_expr(condition))
        }
        StepKind::Jump(stage) => format!("jump {}", ident(&stage.name)),
        StepKind::End => "end".to_string(),
        StepKind::Branch { arms, otherwise } => {
            let mut children: Vec<Unit> = arms
                .iter()
                .map(|arm| {
                    let prefix = format!("when {} -> ", print_expr(&arm.condition));
                    step_block(prefix, &arm.then, arm.span)
                })
                .collect();
            if let Some(block) = otherwise {
                children.push(step_block("else -> ".into(), block, block.span));
            }
            return Unit::block(s.span, "branch {".into(), children);
        }
        StepKind::Split(arms) => {
            let children = arms
                .iter()
                .map(|arm| {
                    step_block(
                        format!("{} -> ", percent(arm.basis_points)),
                        &arm.then,
                        arm.span,
                    )
                })
                .collect();
            return Unit::block(s.span, "split {".into(), children);
        }
    };
    Unit::line(s.span, text)
}

/// One arm of a branch or split: `prefix` then a bare step or a `{ … }` block.
fn step_block(prefix: String, block: &StepBlock, span: Span) -> Unit {
    match block.steps.as_slice() {
        [only] if !block.braced => {
            // The step shares the arm's line, so the arm takes its place (and its children).
            let mut unit = step(only);
            unit.span = range(span);
            if let Some(first) = unit.head.first_mut() {
                first.insert_str(0, &prefix);
            }
            unit
        }
        steps => Unit::block(span, prefix + "{", steps.iter().map(step).collect()),
    }
}

fn percent(basis_points: u32) -> String {
    let whole = basis_points / 100;
    match basis_points % 100 {
        0 => format!("{whole}%"),
        f if f % 10 == 0 => format!("{whole}.{}%", f / 10),
        f => format!("{whole}.{f:02}%"),
    }
}

fn metric_items(m: &Metric, items: &mut Vec<Unit>) {
    if !m.segments.is_empty() {
        let span = covering(m.segments.iter().map(|s| &s.span));
        items.push(Unit::line(
            span,
            format!("segments [{}]", ident_list(&m.segments)),
        ));
    }
    for measure in &m.measures {
        items.push(Unit::line(
            measure.span,
            format!(
                "measure {} = {}",
                ident(&measure.name.name),
                print_expr(&measure.value)
            ),
        ));
    }
    if let Some(g) = &m.grain {
        items.push(Unit::line(g.span, format!("grain {g}")));
    }
}

fn activation_items(a: &Activation, items: &mut Vec<Unit>) {
    if let Some(s) = &a.segment {
        items.push(Unit::line(s.span, format!("segment {}", ident(&s.name))));
    }
    if let Some(d) = &a.destination {
        let text = match &d.kind {
            DestinationKind::File { path, format } => {
                let mut t = format!("to file {}", string(&path.value));
                match format {
                    Some(FileFormat::Csv) => t.push_str(" format csv"),
                    Some(FileFormat::Parquet) => t.push_str(" format parquet"),
                    None => {}
                }
                t
            }
            DestinationKind::Webhook { url } => format!("to webhook {}", string(&url.value)),
            DestinationKind::Postgres { connection, table } => {
                let mut t = format!("to postgres {}", string(&connection.value));
                if let Some(table) = table {
                    t.push_str(" table ");
                    t.push_str(&string(&table.value));
                }
                t
            }
        };
        items.push(Unit::line(d.span, text));
    }
    if !a.columns.is_empty() {
        let span = covering(a.columns.iter().map(|c| &c.span));
        items.push(Unit::line(
            span,
            format!("columns [{}]", ident_list(&a.columns)),
        ));
    }
    if let Some(s) = &a.schedule {
        let text = match &s.kind {
            ScheduleKind::Once => "schedule once".to_string(),
            ScheduleKind::Every(d) => format!("schedule every {d}"),
            ScheduleKind::Cron(c) => format!("schedule cron {}", string(&c.value)),
        };
        items.push(Unit::line(s.span, text));
    }
    if let Some((mode, span)) = &a.delivery {
        let mode = match mode {
            Delivery::Full => "full",
            Delivery::Changes => "changes",
        };
        items.push(Unit::line(*span, format!("deliver {mode}")));
    }
}

fn ident_list(names: &[Ident]) -> String {
    let names: Vec<String> = names.iter().map(|n| ident(&n.name)).collect();
    names.join(", ")
}

/// A segment condition: one line, or — when that line would be too long and the condition is an
/// `and`/`or` chain — one operand per line, each after the first led by its operator.
fn condition_lines(cond: &Expr, indent_width: usize) -> Vec<String> {
    let one = print_expr(cond);
    let ExprKind::Binary { op, .. } = &cond.kind else {
        return vec![one];
    };
    if indent_width + one.chars().count() <= MAX_WIDTH
        || !matches!(op, BinaryOp::And | BinaryOp::Or)
    {
        return vec![one];
    }
    let op = *op;
    let mut operands = Vec::new();
    let mut rest = cond;
    while let ExprKind::Binary { op: o, left, right } = &rest.kind {
        if *o != op {
            break;
        }
        operands.push(right.as_ref());
        rest = left;
    }
    operands.push(rest);
    operands.reverse();
    operands
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut line = String::new();
            if i == 0 {
                write_expr(e, op.precedence(), &mut line);
            } else {
                line.push_str(op.symbol());
                line.push(' ');
                write_expr(e, op.precedence() + 1, &mut line);
            }
            line
        })
        .collect()
}

// ------------------------------------------------------------------------------ comment placement

/// Ends every unit's range at its last token. A node whose rule ends in an optional part that is
/// absent (a column without a description, a call without `over`…) gets from pest a span that runs
/// on over the whitespace and comments after it, which would swallow the comments that follow.
fn trim_spans(unit: &mut Unit, source: &str, comments: &[(usize, usize)]) {
    let bytes = source.as_bytes();
    let (start, mut end) = unit.span;
    end = end.min(bytes.len());
    loop {
        while end > start && bytes[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        let before = comments.partition_point(|c| c.0 < end);
        match before.checked_sub(1).and_then(|i| comments.get(i)) {
            Some(&(c_start, c_end)) if end <= c_end && c_start >= start => end = c_start,
            _ => break,
        }
    }
    unit.span.1 = end.max(start);
    for child in &mut unit.children {
        trim_spans(child, source, comments);
    }
}

/// Assigns comment `index`, which starts at byte `at`, to a unit of the tree under `unit`: the
/// innermost unit whose range holds it, then by its neighbours there.
fn place(unit: &mut Unit, index: usize, at: usize, source: &str, root: bool) {
    if let Some(child) = unit
        .children
        .iter_mut()
        .find(|c| c.span.0 <= at && at < c.span.1)
    {
        return place(child, index, at, source, false);
    }
    // A comment that shares its line with the end of the previous item stays behind it; one on
    // the opening line of a block stays there.
    if has_code_before(source, at) {
        let prev = unit
            .children
            .iter_mut()
            .filter(|c| c.span.1 <= at)
            .max_by_key(|c| c.span.1);
        if let Some(prev) = prev {
            if same_line(source, prev.span.1, at) {
                return attach_trailing(prev, index);
            }
        }
        if !root && unit.tail.is_some() && same_line(source, unit.span.0, at) {
            unit.head_trailing.push(index);
            return;
        }
    }
    let next = unit
        .children
        .iter_mut()
        .filter(|c| c.span.0 > at)
        .min_by_key(|c| c.span.0);
    match next {
        Some(next) => next.leading.push(index),
        None if root || unit.tail.is_some() => unit.dangling.push(index),
        None => unit.inner.push(index),
    }
}

/// A comment after a unit goes to the unit's last line; when that line is a child's (the meta lines
/// of an `=`-form definition), to that child, which keeps it when the canonical order moves it.
fn attach_trailing(unit: &mut Unit, index: usize) {
    let end = unit.span.1;
    if unit.tail.is_none() {
        if let Some(last) = unit.children.iter_mut().find(|c| c.span.1 == end) {
            return attach_trailing(last, index);
        }
    }
    unit.trailing.push(index);
}

fn same_line(source: &str, from: usize, to: usize) -> bool {
    source.get(from..to).is_some_and(|s| !s.contains('\n'))
}

fn has_code_before(source: &str, at: usize) -> bool {
    let Some(before) = source.get(..at) else {
        return false;
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    !before[line_start..].trim().is_empty()
}

// ------------------------------------------------------------------------------------ rendering

#[derive(Default)]
struct Out {
    lines: Vec<Line>,
}

/// One output line: code, a comment after code, or (empty `text`) a comment on its own line.
struct Line {
    indent: usize,
    text: String,
    comment: Option<String>,
}

impl Out {
    fn push(&mut self, indent: usize, text: String) {
        self.lines.push(Line {
            indent,
            text,
            comment: None,
        });
    }

    fn blank(&mut self) {
        self.push(0, String::new());
    }

    fn finish(self) -> String {
        let mut s = String::new();
        for line in &self.lines {
            if !line.text.is_empty() || line.comment.is_some() {
                for _ in 0..line.indent {
                    s.push_str(INDENT);
                }
            }
            s.push_str(&line.text);
            if let Some(c) = &line.comment {
                if !line.text.is_empty() {
                    s.push_str("  ");
                }
                s.push('#');
                s.push_str(c);
            }
            s.push('\n');
        }
        s
    }
}

/// What rendering needs to write comments.
struct Notes<'a> {
    comments: &'a [Comment],
    source: &'a str,
}

impl Notes<'_> {
    fn text(&self, index: usize) -> String {
        self.comments
            .get(index)
            .map_or_else(String::new, |c| c.text.clone())
    }

    /// Writes a comment on its own line; between definitions a blank line the user left after
    /// it is kept, so a file header stays apart from the first definition.
    fn own_line(&self, index: usize, indent: usize, keep_blank: bool, out: &mut Out) {
        out.lines.push(Line {
            indent,
            text: String::new(),
            comment: Some(self.text(index)),
        });
        if keep_blank && indent == 0 && self.blank_line_after(index) {
            out.blank();
        }
    }

    fn blank_line_after(&self, index: usize) -> bool {
        let Some(c) = self.comments.get(index) else {
            return false;
        };
        let rest = self.source.get(c.span.end as usize..).unwrap_or("");
        let gap = &rest[..rest.len() - rest.trim_start().len()];
        gap.matches('\n').count() >= 2
    }
}

fn render(unit: &Unit, indent: usize, notes: &Notes<'_>, out: &mut Out) {
    for &c in &unit.leading {
        notes.own_line(c, indent, true, out);
    }
    // A lone comment from inside a one-line item reads best after that line.
    let inner_after = unit.children.is_empty()
        && unit.tail.is_none()
        && unit.trailing.is_empty()
        && unit.inner.len() == 1;
    if !inner_after {
        for &c in &unit.inner {
            notes.own_line(c, indent, true, out);
        }
    }
    let first = out.lines.len();
    for h in &unit.head {
        out.push(indent, h.clone());
    }
    if let (Some(&c), Some(line)) = (unit.head_trailing.first(), out.lines.get_mut(first)) {
        line.comment = Some(notes.text(c));
    }
    for child in &unit.children {
        render(child, indent + child.indent, notes, out);
    }
    if let Some(tail) = unit.tail {
        let wrote_head = out.lines.len() > first;
        match out.lines.last_mut() {
            Some(last)
                if wrote_head
                    && unit.children.is_empty()
                    && unit.dangling.is_empty()
                    && unit.head_trailing.is_empty() =>
            {
                last.text.push_str(tail)
            }
            _ => {
                for &c in &unit.dangling {
                    notes.own_line(c, indent + 1, false, out);
                }
                out.push(indent, tail.to_string());
            }
        }
    }
    let after = if inner_after {
        &unit.inner
    } else {
        &unit.trailing
    };
    for &c in after {
        let wrote_lines = out.lines.len() > first;
        match out.lines.last_mut() {
            Some(last) if wrote_lines && last.comment.is_none() => {
                last.comment = Some(notes.text(c));
            }
            // The last line already ends in a child's comment: this one goes above the unit.
            _ => out.lines.insert(
                first,
                Line {
                    indent,
                    text: String::new(),
                    comment: Some(notes.text(c)),
                },
            ),
        }
    }
}

// ------------------------------------------------------------------------------------ expressions

/// Binding strength of what an expression prints as; atoms never need parentheses.
fn precedence(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary { op, .. } => op.precedence(),
        ExprKind::Unary {
            op: UnaryOp::Not, ..
        } => NOT_PRECEDENCE,
        ExprKind::Unary {
            op: UnaryOp::Neg, ..
        } => NEG_PRECEDENCE,
        ExprKind::Predicate {
            negated: true,
            predicate: Predicate::Before(_) | Predicate::After(_),
            ..
        } => NOT_PRECEDENCE,
        ExprKind::Predicate { .. } => PREDICATE_PRECEDENCE,
        _ => u8::MAX,
    }
}

/// Operands of `between`, `contains`, `before`… are arithmetic only (the grammar's `operand`).
const OPERAND_PRECEDENCE: u8 = PREDICATE_PRECEDENCE + 1;

/// Writes `e` where the context binds with strength `min`: parenthesized if `e` binds looser.
fn write_expr(e: &Expr, min: u8, out: &mut String) {
    if precedence(e) < min {
        out.push('(');
        write_bare(e, out);
        out.push(')');
    } else {
        write_bare(e, out);
    }
}

fn write_bare(e: &Expr, out: &mut String) {
    match &e.kind {
        ExprKind::Null => out.push_str("null"),
        ExprKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ExprKind::Number(n) => out.push_str(n),
        ExprKind::String(s) => out.push_str(&string(s)),
        ExprKind::Duration(d) => out.push_str(&d.to_string()),
        ExprKind::Date(s) => {
            out.push_str("date ");
            out.push_str(&string(s));
        }
        ExprKind::Timestamp(s) => {
            out.push_str("timestamp ");
            out.push_str(&string(s));
        }
        ExprKind::List(items) => write_list(items, out),
        ExprKind::Path(parts) => {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(&ident(&part.name));
            }
        }
        ExprKind::Call(call) => {
            out.push_str(&ident(&call.function.name));
            out.push('(');
            for (i, arg) in call.args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(arg, 0, out);
            }
            if let Some(filter) = &call.filter {
                if !call.args.is_empty() {
                    out.push(' ');
                }
                out.push_str("where ");
                write_expr(filter, 0, out);
            }
            out.push(')');
            if let Some(w) = &call.window {
                out.push_str(&format!(" over {w}"));
            }
        }
        ExprKind::Unary { op, operand } => match op {
            UnaryOp::Not => {
                out.push_str("not ");
                write_expr(operand, NOT_PRECEDENCE, out);
            }
            UnaryOp::Neg => {
                out.push('-');
                write_expr(operand, NEG_PRECEDENCE, out);
            }
        },
        ExprKind::Binary { op, left, right } => {
            write_expr(left, op.precedence(), out);
            out.push(' ');
            out.push_str(op.symbol());
            out.push(' ');
            write_expr(right, op.precedence() + 1, out);
        }
        ExprKind::Predicate {
            subject,
            negated,
            predicate,
        } => write_predicate(subject, *negated, predicate, out),
        ExprKind::Sequence(seq) => {
            out.push_str("did ");
            write_seq_step(&seq.first, out);
            for then in &seq.then {
                out.push_str(" then ");
                if then.negated {
                    out.push_str("not ");
                }
                write_seq_step(&then.step, out);
                out.push_str(&format!(" within {}", then.within));
            }
            if let Some(w) = &seq.window {
                out.push_str(&format!(" over {w}"));
            }
        }
        ExprKind::Paren(inner) => {
            out.push('(');
            write_expr(inner, 0, out);
            out.push(')');
        }
    }
}

fn write_list(items: &[Expr], out: &mut String) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_expr(item, 0, out);
    }
    out.push(']');
}

fn write_predicate(subject: &Expr, negated: bool, predicate: &Predicate, out: &mut String) {
    // The grammar has no `not before`/`not after`; should a tree say so, print what it means.
    if negated && matches!(predicate, Predicate::Before(_) | Predicate::After(_)) {
        out.push_str("not (");
        write_predicate(subject, false, predicate, out);
        out.push(')');
        return;
    }
    write_expr(subject, PREDICATE_PRECEDENCE, out);
    let not = if negated { "not " } else { "" };
    let operand = |word: &str, e: &Expr, out: &mut String| {
        out.push_str(&format!(" {not}{word} "));
        write_expr(e, OPERAND_PRECEDENCE, out);
    };
    match predicate {
        Predicate::IsNull => out.push_str(&format!(" is {not}null")),
        Predicate::IsSet => out.push_str(&format!(" is {not}set")),
        Predicate::In(items) => {
            out.push_str(&format!(" {not}in "));
            write_list(items, out);
        }
        Predicate::Between(low, high) => {
            operand("between", low, out);
            out.push_str(" and ");
            write_expr(high, OPERAND_PRECEDENCE, out);
        }
        Predicate::Contains(e) => operand("contains", e, out),
        Predicate::StartsWith(e) => operand("starts with", e, out),
        Predicate::EndsWith(e) => operand("ends with", e, out),
        Predicate::Matches(e) => operand("matches", e, out),
        Predicate::WithinLast(d) => out.push_str(&format!(" {not}within last {d}")),
        Predicate::Before(e) => operand("before", e, out),
        Predicate::After(e) => operand("after", e, out),
    }
}

fn write_seq_step(step: &SequenceStep, out: &mut String) {
    match &step.filter {
        Some(filter) => {
            out.push('(');
            out.push_str(&ident(&step.behavior.name));
            out.push_str(" where ");
            write_expr(filter, 0, out);
            out.push(')');
        }
        None => out.push_str(&ident(&step.behavior.name)),
    }
}

// ------------------------------------------------------------------------------------ lexical

/// A name as it must be written: bare when the grammar reads it back as a plain name, else in
/// backticks.
fn ident(name: &str) -> String {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED_WORDS.contains(&name);
    if plain {
        name.to_string()
    } else {
        format!("`{name}`")
    }
}

/// A string literal with the grammar's escapes.
fn string(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testgen;

    fn parse_ok(text: &str) -> File {
        let parsed = parse_file(FileId(0), text);
        assert!(
            parsed.diagnostics.is_empty(),
            "printed text does not parse: {:?}\n{text}",
            parsed.diagnostics
        );
        parsed.file
    }

    fn fmt(text: &str) -> String {
        match format_source("test.cdp", text) {
            Ok(out) => out,
            Err(d) => {
                let once = print_file(&parse_file(FileId(0), text).file, text);
                let twice = print_file(&parse_file(FileId(0), &once).file, &once);
                panic!("format failed: {d:?}\ninput:\n{text}\nonce:\n{once}\ntwice:\n{twice}")
            }
        }
    }

    /// Formats `input`, expects `expected`, and expects `expected` to be its own format.
    fn check(input: &str, expected: &str) {
        assert_eq!(fmt(input), expected, "input:\n{input}");
        assert_eq!(fmt(expected), expected, "not a fixed point");
    }

    /// The expression of `feature f of c = …`, formatted.
    fn expr_fmt(e: &str) -> String {
        let out = fmt(&format!("feature f of c = {e}"));
        out.trim_end()
            .strip_prefix("feature f of c = ")
            .unwrap_or(&out)
            .to_string()
    }

    #[test]
    fn every_definition_in_canonical_order() {
        let input = r#"
source orders "Orders from the shop" { columns { order_id: string pii "id", customer_id: string,
            amount: decimal(12,2)?, tags: list<string>, order_ts: timestamp }
  time order_ts
  tags ["sales"] owner "data-team"
  key order_id
}
entity customer {
  from orders { customer_id = customer_id }
  key email priority 2 max 5 per profile exclude ["", "test@example.com"] normalize lower(trim(email))
  key customer_id
  from customers  { customer_id = customer_id, email = email }
}
behavior purchase of customer = orders where status = "completed" at order_ts tags ["x"] owner "me"
feature orders_30d of customer "orders in the last 30 days" = count(purchase) over 30d
attribute country of customer = customers.country latest by updated_at
segment high_value of customer "Big spenders" { owner "crm"
  lifetime_value > 1000 and orders_30d >= 1 }
journey winback of customer {
  stage offer { activate coupon_10 wait 7d end }
  exit unsubscribed  entry lapsed   goal count(purchase) over 30d >= 1
  reentry after 90d
  stage nudge { activate email_1  wait 3d
    branch { when views_7d > 0 -> jump offer  when x -> { activate a } else -> { activate email_2 end } }
    split { 50% -> activate a, 33.33% -> {} 16.5% -> wait until did view then not purchase within 1d timeout 2d } }
}
metric kpis of customer { grain 1d measure revenue = sum(purchase.amount) segments [high_value, winback] }
activation export of customer { deliver changes schedule every 1d columns [email, country]
  to file "out.csv" format csv segment high_value }
"#;
        let expected = r#"source orders "Orders from the shop" {
  owner "data-team"
  tags ["sales"]
  key order_id
  time order_ts
  columns {
    order_id: string pii "id"
    customer_id: string
    amount: decimal(12, 2)?
    tags: list<string>
    order_ts: timestamp
  }
}

entity customer {
  key email normalize lower(trim(email)) exclude ["", "test@example.com"] max 5 per profile priority 2
  key customer_id
  from orders { customer_id = customer_id }
  from customers { customer_id = customer_id, email = email }
}

behavior purchase of customer = orders where status = "completed" at order_ts
  owner "me"
  tags ["x"]

feature orders_30d of customer "orders in the last 30 days" = count(purchase) over 30d

attribute country of customer = customers.country latest by updated_at

segment high_value of customer "Big spenders" {
  owner "crm"
  lifetime_value > 1000 and orders_30d >= 1
}

journey winback of customer {
  entry lapsed
  goal count(purchase) over 30d >= 1
  exit unsubscribed
  reentry after 90d
  stage offer {
    activate coupon_10
    wait 7d
    end
  }
  stage nudge {
    activate email_1
    wait 3d
    branch {
      when views_7d > 0 -> jump offer
      when x -> {
        activate a
      }
      else -> {
        activate email_2
        end
      }
    }
    split {
      50% -> activate a
      33.33% -> {}
      16.5% -> wait until did view then not purchase within 1d timeout 2d
    }
  }
}

metric kpis of customer {
  segments [high_value, winback]
  measure revenue = sum(purchase.amount)
  grain 1d
}

activation export of customer {
  segment high_value
  to file "out.csv" format csv
  columns [email, country]
  schedule every 1d
  deliver changes
}
"#;
        check(input, expected);
    }

    #[test]
    fn empty_blocks_close_on_their_line() {
        check(
            "entity e { } journey j of c { stage s { branch { } split { } } }",
            "entity e {}\n\njourney j of c {\n  stage s {\n    branch {}\n    split {}\n  }\n}\n",
        );
        // A columns block the user wrote stays, even empty; a missing one is not invented.
        check("source s { columns { } }", "source s {\n  columns {}\n}\n");
        check("source s { key id }", "source s {\n  key id\n}\n");
    }

    #[test]
    fn parentheses_are_the_needed_ones_plus_the_written_ones() {
        assert_eq!(expr_fmt("a and b or c"), "a and b or c");
        assert_eq!(expr_fmt("a and (b or c)"), "a and (b or c)");
        assert_eq!(expr_fmt("((a)) + 1"), "((a)) + 1");
        assert_eq!(expr_fmt("not a = b"), "not a = b");
        assert_eq!(
            expr_fmt("not not a and -(-b) * 2"),
            "not not a and -(-b) * 2"
        );
        assert_eq!(expr_fmt("x between a + 1 and b"), "x between a + 1 and b");
        assert_eq!(expr_fmt("a - (b - c)"), "a - (b - c)");
    }

    #[test]
    fn trees_without_parentheses_get_the_needed_ones() {
        let path = |n: &str| Expr {
            kind: ExprKind::Path(vec![Ident {
                name: n.into(),
                span: Span::default(),
            }]),
            span: Span::default(),
        };
        let bin = |op, l: Expr, r: Expr| Expr {
            kind: ExprKind::Binary {
                op,
                left: Box::new(l),
                right: Box::new(r),
            },
            span: Span::default(),
        };
        let not = |e: Expr| Expr {
            kind: ExprKind::Unary {
                op: UnaryOp::Not,
                operand: Box::new(e),
            },
            span: Span::default(),
        };
        let pred = |e: Expr, p| Expr {
            kind: ExprKind::Predicate {
                subject: Box::new(e),
                negated: false,
                predicate: p,
            },
            span: Span::default(),
        };
        let sub = bin(BinaryOp::Sub, path("b"), path("c"));
        assert_eq!(
            print_expr(&bin(BinaryOp::Sub, path("a"), sub)),
            "a - (b - c)"
        );
        let or = bin(BinaryOp::Or, path("a"), path("b"));
        assert_eq!(print_expr(&not(or)), "not (a or b)");
        let eq = bin(BinaryOp::Eq, not(path("a")), path("b"));
        assert_eq!(print_expr(&eq), "(not a) = b");
        let is_null = pred(path("b"), Predicate::IsNull);
        assert_eq!(
            print_expr(&bin(BinaryOp::Eq, path("a"), is_null)),
            "a = (b is null)"
        );
        let cmp = bin(BinaryOp::Lt, path("b"), path("c"));
        let between = pred(
            path("x"),
            Predicate::Between(Box::new(cmp), Box::new(path("d"))),
        );
        assert_eq!(print_expr(&between), "x between (b < c) and d");
    }

    #[test]
    fn names_strings_numbers_durations_percentages() {
        assert_eq!(
            expr_fmt("`and` + `my col`.`1st` + `x`"),
            "`and` + `my col`.`1st` + x"
        );
        assert_eq!(
            expr_fmt("`count`(`where` where `over`)"),
            "count(`where` where `over`)"
        );
        assert_eq!(expr_fmt(r#""a\"b\\c\nd\te#""#), r#""a\"b\\c\nd\te#""#);
        assert_eq!(expr_fmt("12.50 + 007"), "12.50 + 007");
        assert_eq!(expr_fmt("x within last 1500ms"), "x within last 1500ms");
        assert_eq!(
            expr_fmt("date \"2024-01-01\" < timestamp \"2024-01-01T00:00:00Z\""),
            "date \"2024-01-01\" < timestamp \"2024-01-01T00:00:00Z\""
        );
        assert_eq!(percent(5000), "50%");
        assert_eq!(percent(3333), "33.33%");
        assert_eq!(percent(550), "5.5%");
        assert_eq!(percent(505), "5.05%");
        assert_eq!(percent(10_000), "100%");
        // `pii` after a column would mark it; as a column name it needs backticks.
        check(
            "source s { columns { a: int `pii`: string pii } }",
            "source s {\n  columns {\n    a: int\n    `pii`: string pii\n  }\n}\n",
        );
    }

    #[test]
    fn every_predicate_prints_as_written() {
        for e in [
            "a is null or a is not null or a is set or a is not set",
            "a in [1, 2] and a not in []",
            "a not between 1 and 2 and a contains \"x\" and a not starts with \"y\"",
            "a ends with \"z\" and a not matches \"^r\" and a not within last 7d",
            "a before date \"2024-01-01\" and a after b + 1d",
            "did view then not (buy where amount > 5) within 1d then pay within 2h over 30d",
            "count(purchase where amount > 50) over 30d >= 2",
        ] {
            assert_eq!(expr_fmt(e), e);
        }
    }

    #[test]
    fn long_segment_conditions_break_at_top_level_operators() {
        let feature = format!("feature f of c \"{}\" = count(b)\n", "d".repeat(90));
        let printed = format_source("t.cdp", &feature).unwrap();
        assert_eq!(
            printed,
            format!("feature f of c \"{}\" =\n  count(b)\n", "d".repeat(90))
        );
        assert_eq!(format_source("t.cdp", &printed).unwrap(), printed);
        let long = "lifetime_value_with_a_long_name > 1000 and orders_in_the_last_thirty_days >= 1 or country in [\"FR\", \"DE\"] and not (email is null)";
        check(
            &format!("segment s of c {{ {long} }}"),
            "segment s of c {\n  lifetime_value_with_a_long_name > 1000 and orders_in_the_last_thirty_days >= 1\n  or country in [\"FR\", \"DE\"] and not (email is null)\n}\n",
        );
        // A long `and` chain: one operand per line, nested `or`s keep their parentheses.
        check(
            "segment s of c { aaaaaaaaaaaaaaaaaaaa > 1 and (bbbbbbbbbbbbbbbbbbbb or cccccccccccccccccccc) and dddddddddddddddddddd and eeeeeeeeee }",
            "segment s of c {\n  aaaaaaaaaaaaaaaaaaaa > 1\n  and (bbbbbbbbbbbbbbbbbbbb or cccccccccccccccccccc)\n  and dddddddddddddddddddd\n  and eeeeeeeeee\n}\n",
        );
        // Not a chain at the top (parenthesized as a whole): left on one line.
        let one = format!("segment s of c {{\n  ({long})\n}}\n");
        check(&one, &one);
    }

    #[test]
    fn step_blocks_keep_braces_only_when_needed_or_written() {
        check(
            "journey j of c { stage s { branch { when a -> end when b -> { end } else -> {} } split { 10% -> { wait 1d end } 90% -> branch { else -> end } } } }",
            "journey j of c {
  stage s {
    branch {
      when a -> end
      when b -> {
        end
      }
      else -> {}
    }
    split {
      10% -> {
        wait 1d
        end
      }
      90% -> branch {
        else -> end
      }
    }
  }
}
",
        );
    }

    #[test]
    fn comments_stay_with_their_items() {
        let input = "# header

# about orders
source orders { # after brace
  columns {
    # first col
    a: string  # trailing a
    b: int
    # end of columns
  }
  # about key
  key a # key trailing
  # dangling in source
} # after source

feature f of c = a +   # inside expr
  b  # after b
  tags [\"t\"]  # after tags
  owner \"o\"   # after owner

journey j of c {
  stage s {
    branch {  # after branch brace
      when a -> branch {
        # inner
        when b -> end  # t1
      }  # after inner branch
      else -> end # else t
      # before branch close
    }
  }
}
# at end 1

# at end 2

";
        let expected = "# header

# about orders
source orders {  # after brace
  # about key
  key a  # key trailing
  columns {
    # first col
    a: string  # trailing a
    b: int
    # end of columns
  }
  # dangling in source
}  # after source

# inside expr
feature f of c = a + b  # after b
  owner \"o\"  # after owner
  tags [\"t\"]  # after tags

journey j of c {
  stage s {
    branch {  # after branch brace
      when a -> branch {
        # inner
        when b -> end  # t1
      }  # after inner branch
      else -> end  # else t
      # before branch close
    }
  }
}

# at end 1

# at end 2
";
        check(input, expected);
    }

    #[test]
    fn comments_inside_expressions_move_to_a_line_boundary() {
        // One comment goes to the end of the item's line; several go above it.
        check(
            "segment s of c {\n  a > 1 and # why\n  b < 2\n}\n",
            "segment s of c {\n  a > 1 and b < 2  # why\n}\n",
        );
        check(
            "segment s of c {\n  a > 1 and # one\n  # two\n  b < 2 # three\n}\n",
            "segment s of c {\n  # one\n  # two\n  a > 1 and b < 2  # three\n}\n",
        );
        check(
            "entity e { from s { a # x\n = b } }",
            "entity e {\n  from s { a = b }  # x\n}\n",
        );
    }

    #[test]
    fn quoted_names_are_not_comments() {
        // `#` and `"` inside a quoted name start neither a comment nor a string.
        check(
            "feature `a#b` of `c\"d` = `x # y` # real\n",
            "feature `a#b` of `c\"d` = `x # y`  # real\n",
        );
    }

    #[test]
    fn files_of_comments_only_and_empty_files() {
        check("", "");
        check("  \n\n", "");
        check("# a\n\n\n# b", "# a\n\n# b\n");
    }

    #[test]
    fn syntax_errors_are_returned_not_formatted() {
        let Err(diags) = format_source("bad.cdp", "segment s of c { a > }") else {
            panic!("formatted a file with a syntax error");
        };
        assert!(diags.iter().any(|d| d.code == "syntax"));
    }

    /// The printer's list of reserved words is the grammar's `keyword` rule.
    #[test]
    fn reserved_words_match_the_grammar() {
        let grammar = include_str!("cdp.pest");
        let rule = grammar
            .split("keyword = @{")
            .nth(1)
            .and_then(|r| r.split("~ !ident_char").next())
            .expect("the grammar has a keyword rule");
        let mut words: Vec<&str> = rule.split('"').skip(1).step_by(2).collect();
        let mut reserved = RESERVED_WORDS.to_vec();
        words.sort_unstable();
        reserved.sort_unstable();
        assert_eq!(words, reserved);
    }

    /// `text`, which is `file` with the comments `added`, formats to a fixed point that keeps
    /// each comment once and means `file`.
    fn keeps_comments(
        mut file: File,
        text: &str,
        mut added: Vec<String>,
    ) -> Result<(), TestCaseError> {
        let out = fmt(text);
        let mut back = parse_ok(&out);
        let mut kept: Vec<String> = back.comments.drain(..).map(|c| c.text).collect();
        kept.sort();
        added.sort();
        prop_assert_eq!(&kept, &added, "input:\n{}\noutput:\n{}", text, out);
        prop_assert_eq!(fmt(&out), out.clone(), "input:\n{}", text);
        testgen::normalize(&mut back);
        testgen::normalize(&mut file);
        prop_assert_eq!(back, file);
        Ok(())
    }

    proptest! {
        /// Printing a tree and parsing the text gives the tree back; printing is a fixed point.
        #[test]
        fn printed_trees_parse_back(file in testgen::file()) {
            let printed = print_file(&file, "");
            let mut back = parse_ok(&printed);
            let reprinted = print_file(&back, &printed);
            prop_assert_eq!(&reprinted, &printed);
            let mut expected = file.clone();
            testgen::normalize(&mut expected);
            testgen::normalize(&mut back);
            prop_assert_eq!(back, expected, "printed:\n{}", printed);
        }

        /// Deeper expressions than whole files carry, for precedence and parentheses.
        #[test]
        fn printed_expressions_parse_back(e in testgen::expr_with(8, 96)) {
            let text = format!("feature f of c = {}\n", print_expr(&e));
            let file = parse_ok(&text);
            let Some(DefKind::Feature(f)) = file.definitions.first().map(|d| &d.kind) else {
                panic!("not a feature: {text}");
            };
            let (mut back, mut expected) = (f.value.clone(), e);
            testgen::normalize_expr(&mut back);
            testgen::normalize_expr(&mut expected);
            prop_assert_eq!(back, expected, "printed:\n{}", text);
            // Short definitions stay on one line; long ones break after `=` (and stay broken).
            let formatted = fmt(&text);
            if text.trim_end().chars().count() <= MAX_WIDTH {
                prop_assert_eq!(&formatted, &text);
            }
            prop_assert_eq!(fmt(&formatted), formatted);
        }

        /// Layout does not depend on the input's: the same file on one line formats the same.
        #[test]
        fn layout_ignores_input_whitespace(file in testgen::file()) {
            let printed = print_file(&file, "");
            let squashed = printed.replace('\n', " ");
            prop_assert_eq!(fmt(&squashed), printed);
        }

        /// Comments added at any line of a file laid out any way are each kept once, the result
        /// is a fixed point and means the same.
        #[test]
        fn comments_are_kept_once(
            file in testgen::file(),
            marks in proptest::collection::vec(0u8..6, 1..64),
        ) {
            let printed = print_file(&file, "");
            let mut text = String::new();
            let mut added = Vec::new();
            let note = |added: &mut Vec<String>| {
                // Quotes and backticks in comments must not confuse the comment scanner.
                let t = format!(" c{} \"`", added.len());
                added.push(t.clone());
                t
            };
            for (i, line) in printed.lines().enumerate() {
                text.push_str(line);
                match marks[i % marks.len()] {
                    0 => text.push(' '),
                    1 => text.push('\n'),
                    2 => text.push_str(&format!(" #{}\n", note(&mut added))),
                    3 => text.push_str(&format!("\n   #{}\n", note(&mut added))),
                    4 => {
                        text.push_str(&format!(" #{}\n", note(&mut added)));
                        text.push_str(&format!("#{}\n\n", note(&mut added)));
                    }
                    _ => text.push_str("\n\n    "),
                }
            }
            if marks[0] == 5 {
                text.push_str(&format!("#{}", note(&mut added)));
            }
            keeps_comments(file, &text, added)?;
        }

        /// Comments between any two tokens (inside expressions, headers, clauses) are kept once
        /// and the result is a fixed point.
        #[test]
        fn comments_between_tokens_are_kept_once(
            file in testgen::file(),
            marks in proptest::collection::vec(0u8..8, 1..64),
        ) {
            let printed = print_file(&file, "");
            let mut text = String::new();
            let mut added = Vec::new();
            let (mut in_string, mut in_name, mut escaped) = (false, false, false);
            let mut spaces = 0;
            for c in printed.chars() {
                let free = !in_string && !in_name;
                match c {
                    '"' if !in_name && !escaped => in_string = !in_string,
                    '`' if !in_string => in_name = !in_name,
                    _ => {}
                }
                escaped = in_string && c == '\\' && !escaped;
                if c == ' ' && free {
                    spaces += 1;
                    match marks[spaces % marks.len()] {
                        0 => {
                            let t = format!(" c{}", added.len());
                            text.push_str(&format!(" #{t}\n"));
                            added.push(t);
                        }
                        1 => {
                            let t = format!(" c{}", added.len());
                            text.push_str(&format!("\n#{t}\n"));
                            added.push(t);
                        }
                        2 => text.push('\n'),
                        _ => text.push(' '),
                    }
                } else {
                    text.push(c);
                }
            }
            keeps_comments(file, &text, added)?;
        }
    }
}
