//! Parsing: pest pairs straight into the AST, spans on every node, every syntax error of a file.

use std::sync::OnceLock;

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser as _;
use pest_derive::Parser;

use crate::ast::*;
use crate::diag::Diagnostic;
use crate::span::{FileId, Span};

#[derive(Parser)]
#[grammar = "cdp.pest"]
struct CdpParser;

/// What parsing one file gives: the definitions it could read and the problems it found.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub file: File,
    pub diagnostics: Vec<Diagnostic>,
}

/// Words that introduce a definition; parsing resumes at the next one after a syntax error.
pub const DEFINITION_KEYWORDS: [&str; 9] = [
    "source",
    "entity",
    "attribute",
    "behavior",
    "feature",
    "segment",
    "journey",
    "metric",
    "activation",
];

/// Parses one `.cdp` file. Never panics: bad input becomes diagnostics, and parsing resumes at
/// the next definition so that every syntax error of the file is reported in one run.
pub fn parse_file(file: FileId, text: &str) -> Parsed {
    let comments = comments(file, text);
    if let Some(at) = too_deep(text) {
        let diag = Diagnostic::error(
            "too-deep",
            Span::new(file, at, at + 1),
            format!("brackets nested more than {MAX_NESTING} deep"),
        )
        .with_help("split the expression into several features or segments");
        return Parsed {
            file: File {
                definitions: Vec::new(),
                comments,
            },
            diagnostics: vec![diag],
        };
    }
    let mut builder = Builder {
        file,
        base: 0,
        diagnostics: Vec::new(),
        expr_depth: 0,
    };
    let mut definitions = Vec::new();
    let mut pos = skip_trivia(text, 0);
    while pos < text.len() {
        builder.base = pos;
        match CdpParser::parse(Rule::single_definition, &text[pos..]) {
            Ok(mut pairs) => {
                let single = pairs.next().expect("single_definition yields one pair");
                let end = pos + single.as_span().end();
                if let Some(def) = single.into_inner().find(|p| p.as_rule() != Rule::EOI) {
                    definitions.push(builder.definition(def));
                }
                pos = skip_trivia(text, end);
            }
            Err(err) => {
                let at = pos
                    + match err.location {
                        InputLocation::Pos(p) => p,
                        InputLocation::Span((s, _)) => s,
                    };
                builder
                    .diagnostics
                    .push(syntax_error(file, text, at, at == pos, &err.variant));
                pos = skip_trivia(text, next_definition_start(text, at.max(pos + 1)));
            }
        }
    }
    Parsed {
        file: File {
            definitions,
            comments,
        },
        diagnostics: builder.diagnostics,
    }
}

/// Deeper bracket nesting than any real definition needs; the limit keeps the recursive descent
/// (pest's, ours, the checker's) far from the end of the stack on hostile input.
pub const MAX_NESTING: usize = 64;
/// Tokens in one top-level expression, for the same reason (long prefix or operator chains).
pub const MAX_EXPR_TOKENS: usize = 4000;

/// The offset of the first bracket nested deeper than [`MAX_NESTING`], outside strings/comments.
fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q && bytes[i] != b'\n' {
                    i += if q == b'"' && bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

fn comments(file: FileId, text: &str) -> Vec<Comment> {
    let Ok(mut pairs) = CdpParser::parse(Rule::comment_scan, text) else {
        return Vec::new();
    };
    let Some(scan) = pairs.next() else {
        return Vec::new();
    };
    scan.into_inner()
        .filter(|p| p.as_rule() == Rule::line_comment)
        .map(|p| {
            let s = p.as_span();
            Comment {
                text: p.as_str()[1..].trim_end().to_string(),
                span: Span::new(file, s.start(), s.end()),
            }
        })
        .collect()
}

/// Pest keeps the whitespace (and comments) it skipped before an optional part that turned out
/// absent, so a node can end in trivia; this moves `end` back to the node's last token.
fn trim_trivia(text: &str, start: usize, mut end: usize) -> usize {
    loop {
        let trimmed = text[start..end].trim_end().len() + start;
        let line_start = text[..trimmed].rfind('\n').map_or(0, |i| i + 1).max(start);
        match comment_start(&text[line_start..trimmed]) {
            Some(i) => end = line_start + i,
            None => return trimmed,
        }
    }
}

/// Where a `#` comment starts in one line, skipping strings and quoted names.
fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => return Some(i),
            q @ (b'"' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += if q == b'"' && bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Skips whitespace and comments from `pos`.
fn skip_trivia(text: &str, mut pos: usize) -> usize {
    let bytes = text.as_bytes();
    while pos < bytes.len() {
        match bytes[pos] {
            b' ' | b'\t' | b'\r' | b'\n' => pos += 1,
            b'#' => {
                while pos < bytes.len() && bytes[pos] != b'\n' {
                    pos += 1;
                }
            }
            _ => break,
        }
    }
    pos
}

/// The start of the first line after `from` that begins with a definition keyword.
fn next_definition_start(text: &str, from: usize) -> usize {
    let mut from = from.min(text.len());
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let mut line_start = text[..from].rfind('\n').map_or(0, |i| i + 1);
    loop {
        let Some(nl) = text[line_start..].find('\n') else {
            return text.len();
        };
        line_start += nl + 1;
        let rest = &text[line_start..];
        let starts_definition = DEFINITION_KEYWORDS.iter().any(|kw| {
            rest.starts_with(kw)
                && rest[kw.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c == ' ' || c == '\t')
        });
        if starts_definition && line_start >= from {
            return line_start;
        }
    }
}

/// A syntax error at `at`; `at_definition_start` says the parser was looking for a definition.
fn syntax_error(
    file: FileId,
    text: &str,
    at: usize,
    at_definition_start: bool,
    variant: &ErrorVariant<Rule>,
) -> Diagnostic {
    let at = at.min(text.len());
    let found = found_token(text, at);
    let first_char = text[at..].chars().next().map_or(0, char::len_utf8);
    let end = at + found.len().max(first_char);
    let mut expected = match variant {
        ErrorVariant::ParsingError { positives, .. } => {
            // A place where any expression may start lists a dozen literal kinds; say it once.
            let starters = positives.iter().filter(|r| starts_expression(**r)).count();
            let mut names: Vec<&str> = positives
                .iter()
                .map(|r| {
                    if starters >= 2 && starts_expression(*r) {
                        "an expression"
                    } else {
                        describe(*r)
                    }
                })
                .collect();
            names.sort_unstable();
            names.dedup();
            names
        }
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    expected.retain(|s| !s.is_empty());
    let expected_text = match expected.as_slice() {
        [] => "something else".to_string(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    };
    let found_text = if found.is_empty() {
        "the end of the file".to_string()
    } else {
        format!("`{found}`")
    };
    let span = Span::new(file, at, end.min(text.len()));
    let before = text[..at].trim_end();
    let previous_word = before
        .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or("");
    // Mistakes people make often get a message of their own.
    let takes_duration = [
        "over", "within", "wait", "timeout", "grain", "every", "last",
    ];
    if takes_duration.contains(&previous_word)
        || (takes_duration.contains(&found) && (expected.is_empty() || at_definition_start))
    {
        let (at, shown) = if takes_duration.contains(&found) {
            let rest = at + found.len();
            let next = skip_spaces(text, rest);
            (next, found_token(text, next))
        } else {
            (at, found)
        };
        let end = (at + shown.len().max(1)).min(text.len());
        return Diagnostic::error(
            "syntax",
            Span::new(file, at.min(text.len()), end),
            format!("expected a duration like `30d`, found `{shown}`"),
        )
        .with_label("not a duration")
        .with_help(
            "a duration is a whole number and a unit: ms, s, m, h, d or w (e.g. `90d`, `12h`)",
        );
    }
    if at_definition_start {
        return Diagnostic::error(
            "syntax",
            span,
            format!("expected a definition, found {found_text}"),
        )
        .with_label("expected a definition")
        .with_note(format!(
            "a .cdp file is a list of definitions, each starting with one of: {}",
            DEFINITION_KEYWORDS.join(", ")
        ));
    }
    if found == "\"" && !text[at + 1..].lines().next().unwrap_or("").contains('"') {
        return Diagnostic::error("syntax", span, "unterminated string")
            .with_label("this string is not closed on its line")
            .with_help("close it with `\"`; strings cannot span lines (use \\n)");
    }
    let mut diag = Diagnostic::error(
        "syntax",
        span,
        format!("expected {expected_text}, found {found_text}"),
    )
    .with_label(format!("expected {expected_text}"));
    if found == "=" && before.ends_with('=') {
        diag = diag.with_help("equality is a single `=`");
    } else if found == "&" || found == "|" {
        diag = diag.with_help("conditions combine with `and` and `or`");
    } else if crate::format::RESERVED_WORDS.contains(&found) {
        diag = diag.with_help(format!(
            "`{found}` is a reserved word; quote it with backticks to use it as a name"
        ));
    }
    diag
}

fn skip_spaces(text: &str, mut pos: usize) -> usize {
    let bytes = text.as_bytes();
    while pos < bytes.len() && (bytes[pos] == b' ' || bytes[pos] == b'\t') {
        pos += 1;
    }
    pos
}

fn starts_expression(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::ident
            | Rule::number
            | Rule::string
            | Rule::duration
            | Rule::list
            | Rule::paren
            | Rule::call
            | Rule::path
            | Rule::sequence
            | Rule::kw_did
            | Rule::kw_date
            | Rule::kw_timestamp
            | Rule::date_lit
            | Rule::timestamp_lit
            | Rule::true_lit
            | Rule::false_lit
            | Rule::null_lit
            | Rule::not
            | Rule::neg
            | Rule::expr
    )
}

/// The word or symbol at `at`, for "found …" in messages.
fn found_token(text: &str, at: usize) -> &str {
    let rest = &text[at..];
    let Some(first) = rest.chars().next() else {
        return "";
    };
    let len = if first.is_alphanumeric() || first == '_' {
        rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    &rest[..len]
}

/// How a grammar rule reads in "expected …" messages.
fn describe(rule: Rule) -> &'static str {
    match rule {
        Rule::ident | Rule::plain_ident | Rule::quoted_ident => "a name",
        Rule::string | Rule::description => "a string",
        Rule::number | Rule::integer => "a number",
        Rule::duration => "a duration like `30d`",
        Rule::percent => "a percentage like `50%`",
        Rule::type_expr | Rule::type_name | Rule::type_decimal | Rule::type_list => {
            "a type (string, int, float, decimal(p, s), bool, date, timestamp, duration, list<T>)"
        }
        Rule::expr | Rule::operand => "an expression",
        Rule::of_entity | Rule::kw_of => "`of <entity>`",
        Rule::source_def
        | Rule::entity_def
        | Rule::attribute_def
        | Rule::behavior_def
        | Rule::feature_def
        | Rule::segment_def
        | Rule::journey_def
        | Rule::metric_def
        | Rule::activation_def => "a definition",
        Rule::owner | Rule::kw_owner => "`owner`",
        Rule::tags | Rule::kw_tags => "`tags`",
        Rule::source_key | Rule::identity_key => "`key`",
        Rule::source_time => "`time`",
        Rule::columns => "`columns`",
        Rule::column => "a column `name: type`",
        Rule::nullable => "`?`",
        Rule::pii => "`pii`",
        Rule::key_normalize => "`normalize`",
        Rule::key_exclude => "`exclude`",
        Rule::key_limit => "`max N per profile`",
        Rule::key_priority => "`priority`",
        Rule::entity_from => "`from <source> { … }`",
        Rule::key_binding => "a key binding `key = expression`",
        Rule::pick | Rule::pick_dir => "`latest by` or `earliest by`",
        Rule::behavior_where | Rule::call_where => "`where`",
        Rule::behavior_at => "`at <column>`",
        Rule::journey_entry => "`entry`",
        Rule::journey_goal => "`goal`",
        Rule::journey_exit => "`exit`",
        Rule::journey_reentry => "`reentry`",
        Rule::reentry_never | Rule::reentry_always | Rule::reentry_after => {
            "`never`, `always` or `after <duration>`"
        }
        Rule::stage => "`stage`",
        Rule::step_activate
        | Rule::step_wait
        | Rule::step_wait_until
        | Rule::step_branch
        | Rule::step_split
        | Rule::step_jump
        | Rule::step_end
        | Rule::step_block => "a step (activate, wait, branch, split, jump, end)",
        Rule::branch_when => "`when`",
        Rule::branch_else => "`else`",
        Rule::split_arm => "a split arm `N% -> …`",
        Rule::metric_segments => "`segments`",
        Rule::measure => "`measure`",
        Rule::metric_grain => "`grain`",
        Rule::activation_segment => "`segment`",
        Rule::destination => "`to`",
        Rule::dest_file | Rule::dest_webhook | Rule::dest_postgres => {
            "a destination (file, webhook, postgres)"
        }
        Rule::file_format => "`csv` or `parquet`",
        Rule::activation_columns => "`columns`",
        Rule::schedule => "`schedule`",
        Rule::schedule_once | Rule::schedule_every | Rule::schedule_cron => {
            "`once`, `every <duration>` or `cron \"…\"`"
        }
        Rule::delivery => "`deliver`",
        Rule::delivery_mode => "`full` or `changes`",
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::rem => "an operator",
        Rule::le | Rule::ge | Rule::ne | Rule::lt | Rule::gt | Rule::eq => "an operator",
        Rule::and => "`and`",
        Rule::or => "`or`",
        Rule::is_null
        | Rule::is_set
        | Rule::in_list
        | Rule::between
        | Rule::contains
        | Rule::starts_with
        | Rule::ends_with
        | Rule::matches
        | Rule::within_last
        | Rule::before
        | Rule::after => "an operator",
        Rule::window => "`over <duration>`",
        Rule::list => "a list `[…]`",
        Rule::call | Rule::call_args => "arguments",
        Rule::seq_then => "`then`",
        Rule::seq_step => "a behavior name",
        Rule::EOI => "the end of the file",
        r => keyword_text(r).unwrap_or(""),
    }
}

// ------------------------------------------------------------------------------ AST building

struct Builder {
    file: FileId,
    /// Offset of the parsed slice in the file: pest spans are relative to it.
    base: usize,
    diagnostics: Vec<Diagnostic>,
    /// How many `expr` rules enclose the one being built (0 = a top-level expression).
    expr_depth: u32,
}

/// The children of a pair that carry meaning (keywords are dropped).
fn kids(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner()
        .filter(|p| keyword_text(p.as_rule()).is_none())
}

impl Builder {
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let s = pair.as_span();
        let end = trim_trivia(s.get_input(), s.start(), s.end());
        Span::new(self.file, self.base + s.start(), self.base + end)
    }

    fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        let span = self.span(&pair);
        let inner = pair
            .into_inner()
            .next()
            .expect("ident holds plain or quoted");
        let name = match inner.as_rule() {
            Rule::quoted_ident => inner.as_str().trim_matches('`').to_string(),
            _ => inner.as_str().to_string(),
        };
        Ident { name, span }
    }

    fn string(&mut self, pair: Pair<'_, Rule>) -> StrLit {
        let span = self.span(&pair);
        let raw = pair.into_inner().next().map_or("", |p| p.as_str());
        let mut value = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                value.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                Some('\\') => value.push('\\'),
                Some('"') => value.push('"'),
                other => {
                    let shown = other.map_or(String::new(), String::from);
                    self.diagnostics.push(
                        Diagnostic::error(
                            "syntax",
                            span,
                            format!("unknown escape `\\{shown}` in string"),
                        )
                        .with_help("the escapes are \\n, \\t, \\\\ and \\\""),
                    );
                }
            }
        }
        StrLit { value, span }
    }

    fn integer(&mut self, pair: Pair<'_, Rule>) -> (u64, Span) {
        let span = self.span(&pair);
        match pair.as_str().parse::<u64>() {
            Ok(n) => (n, span),
            Err(_) => {
                self.diagnostics
                    .push(Diagnostic::error("syntax", span, "number too large"));
                (0, span)
            }
        }
    }

    fn duration(&mut self, pair: Pair<'_, Rule>) -> Duration {
        let span = self.span(&pair);
        let text = pair.as_str();
        let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = match &text[digits.len()..] {
            "ms" => DurationUnit::Millis,
            "s" => DurationUnit::Seconds,
            "m" => DurationUnit::Minutes,
            "h" => DurationUnit::Hours,
            "w" => DurationUnit::Weeks,
            _ => DurationUnit::Days,
        };
        let amount = match digits.parse::<u64>() {
            Ok(n) if n.checked_mul(unit.millis()).is_some() => n,
            _ => {
                self.diagnostics
                    .push(Diagnostic::error("syntax", span, "duration too large"));
                // Not 0: that would add a second, misleading "needs a duration above zero".
                1
            }
        };
        Duration { amount, unit, span }
    }

    fn definition(&mut self, pair: Pair<'_, Rule>) -> Definition {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut items = kids(pair).peekable();
        let name = self.ident(items.next().expect("definition has a name"));
        let mut meta = Meta::default();
        let mut entity = None;
        if items.peek().is_some_and(|p| p.as_rule() == Rule::of_entity) {
            let of = items.next().expect("peeked");
            entity = Some(self.ident(kids(of).next().expect("of_entity has a name")));
        }
        if items
            .peek()
            .is_some_and(|p| p.as_rule() == Rule::description)
        {
            let d = items.next().expect("peeked");
            meta.description =
                Some(self.string(d.into_inner().next().expect("description holds a string")));
        }
        let entity = entity.unwrap_or_else(|| Ident {
            name: String::new(),
            span: name.span,
        });
        let rest: Vec<Pair<'_, Rule>> = items.collect();
        let kind = match rule {
            Rule::source_def => DefKind::Source(self.source(rest, &mut meta, span)),
            Rule::entity_def => DefKind::Entity(self.entity(rest, &mut meta)),
            Rule::attribute_def => DefKind::Attribute(self.attribute(entity, rest, &mut meta)),
            Rule::behavior_def => DefKind::Behavior(self.behavior(entity, rest, &mut meta)),
            Rule::feature_def => {
                let mut value = None;
                for p in rest {
                    match p.as_rule() {
                        Rule::expr => value = Some(self.expr(p)),
                        _ => self.meta_item(p, &mut meta),
                    }
                }
                DefKind::Feature(Feature {
                    entity,
                    value: value.expect("feature has a value"),
                })
            }
            Rule::segment_def => {
                let mut condition = None;
                for p in rest {
                    match p.as_rule() {
                        Rule::expr => condition = Some(self.expr(p)),
                        _ => self.meta_item(p, &mut meta),
                    }
                }
                DefKind::Segment(Segment {
                    entity,
                    condition: condition.expect("segment has a condition"),
                })
            }
            Rule::journey_def => DefKind::Journey(self.journey(entity, rest, &mut meta)),
            Rule::metric_def => DefKind::Metric(self.metric(entity, rest, &mut meta)),
            Rule::activation_def => DefKind::Activation(self.activation(entity, rest, &mut meta)),
            other => unreachable!("not a definition rule: {other:?}"),
        };
        Definition {
            name,
            meta,
            kind,
            span,
        }
    }

    fn meta_item(&mut self, pair: Pair<'_, Rule>, meta: &mut Meta) {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::owner => {
                let s = self.string(kids(pair).next().expect("owner holds a string"));
                if meta.owner.is_some() {
                    self.twice(span, "owner");
                }
                meta.owner = Some(s);
            }
            Rule::tags => {
                if !meta.tags.is_empty() {
                    self.twice(span, "tags");
                }
                meta.tags = kids(pair).map(|p| self.string(p)).collect();
            }
            other => unreachable!("not a meta item: {other:?}"),
        }
    }

    fn twice(&mut self, span: Span, what: &str) {
        self.diagnostics.push(
            Diagnostic::error(
                "duplicate-clause",
                span,
                format!("`{what}` is given more than once"),
            )
            .with_label("second one here")
            .with_help(format!("keep a single `{what}`")),
        );
    }

    fn set_once<T>(&mut self, slot: &mut Option<T>, value: T, span: Span, what: &str) {
        if slot.is_some() {
            self.twice(span, what);
        }
        *slot = Some(value);
    }

    fn source(&mut self, items: Vec<Pair<'_, Rule>>, meta: &mut Meta, def_span: Span) -> Source {
        let mut source = Source {
            key: None,
            time: None,
            columns: Vec::new(),
            columns_span: def_span,
        };
        let mut seen_columns = false;
        for p in items {
            let span = self.span(&p);
            match p.as_rule() {
                Rule::source_key => {
                    let id = self.ident(kids(p).next().expect("key names a column"));
                    self.set_once(&mut source.key, id, span, "key");
                }
                Rule::source_time => {
                    let id = self.ident(kids(p).next().expect("time names a column"));
                    self.set_once(&mut source.time, id, span, "time");
                }
                Rule::columns => {
                    if seen_columns {
                        self.twice(span, "columns");
                    }
                    seen_columns = true;
                    source.columns_span = span;
                    for c in kids(p) {
                        let col = self.column(c);
                        source.columns.push(col);
                    }
                }
                _ => self.meta_item(p, meta),
            }
        }
        source
    }

    fn column(&mut self, pair: Pair<'_, Rule>) -> Column {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let name = self.ident(it.next().expect("column has a name"));
        let ty = self.type_expr(it.next().expect("column has a type"));
        let mut col = Column {
            name,
            ty,
            nullable: false,
            pii: false,
            description: None,
            span,
        };
        for p in it {
            match p.as_rule() {
                Rule::nullable => col.nullable = true,
                Rule::pii => col.pii = true,
                Rule::description => {
                    col.description =
                        Some(self.string(p.into_inner().next().expect("description string")))
                }
                other => unreachable!("not a column part: {other:?}"),
            }
        }
        col
    }

    fn type_expr(&mut self, pair: Pair<'_, Rule>) -> TypeExpr {
        let span = self.span(&pair);
        let inner = pair.into_inner().next().expect("type_expr holds one type");
        let kind = match inner.as_rule() {
            Rule::type_name => match inner.as_str() {
                "string" => TypeKind::String,
                "int" => TypeKind::Int,
                "float" => TypeKind::Float,
                "bool" => TypeKind::Bool,
                "date" => TypeKind::Date,
                "timestamp" => TypeKind::Timestamp,
                _ => TypeKind::Duration,
            },
            Rule::type_decimal => {
                let mut it = kids(inner);
                let (precision, pspan) = self.integer(it.next().expect("precision"));
                let (scale, _) = self.integer(it.next().expect("scale"));
                if !(1..=38).contains(&precision) || scale > precision {
                    self.diagnostics.push(
                        Diagnostic::error(
                            "bad-type",
                            span,
                            format!("decimal({precision}, {scale}) is not a valid decimal type"),
                        )
                        .with_label("precision must be 1..=38 and scale at most the precision")
                        .with_related(pspan, "precision"),
                    );
                }
                TypeKind::Decimal {
                    precision: precision.min(38) as u32,
                    scale: scale.min(precision.min(38)) as u32,
                }
            }
            Rule::type_list => TypeKind::List(Box::new(
                self.type_expr(kids(inner).next().expect("list element type")),
            )),
            other => unreachable!("not a type: {other:?}"),
        };
        TypeExpr { kind, span }
    }

    fn entity(&mut self, items: Vec<Pair<'_, Rule>>, meta: &mut Meta) -> Entity {
        let mut entity = Entity {
            keys: Vec::new(),
            from: Vec::new(),
        };
        for p in items {
            let span = self.span(&p);
            match p.as_rule() {
                Rule::identity_key => {
                    let mut it = kids(p);
                    let name = self.ident(it.next().expect("key has a name"));
                    let mut key = IdentityKey {
                        name,
                        normalize: None,
                        exclude: Vec::new(),
                        max_per_profile: None,
                        priority: None,
                        span,
                    };
                    for clause in it {
                        let cspan = self.span(&clause);
                        match clause.as_rule() {
                            Rule::key_normalize => {
                                let e = self.expr(kids(clause).next().expect("normalize expr"));
                                self.set_once(&mut key.normalize, e, cspan, "normalize");
                            }
                            Rule::key_exclude => {
                                if !key.exclude.is_empty() {
                                    self.twice(cspan, "exclude");
                                }
                                key.exclude = kids(clause).map(|s| self.string(s)).collect();
                            }
                            Rule::key_limit => {
                                let n = self.integer(kids(clause).next().expect("limit"));
                                self.set_once(
                                    &mut key.max_per_profile,
                                    n,
                                    cspan,
                                    "max … per profile",
                                );
                            }
                            Rule::key_priority => {
                                let n = self.integer(kids(clause).next().expect("priority"));
                                self.set_once(&mut key.priority, n, cspan, "priority");
                            }
                            other => unreachable!("not a key clause: {other:?}"),
                        }
                    }
                    entity.keys.push(key);
                }
                Rule::entity_from => {
                    let mut it = kids(p);
                    let source = self.ident(it.next().expect("from names a source"));
                    let bindings = it
                        .map(|b| {
                            let bspan = self.span(&b);
                            let mut bi = kids(b);
                            let key = self.ident(bi.next().expect("binding key"));
                            let value = self.expr(bi.next().expect("binding value"));
                            KeyBinding {
                                key,
                                value,
                                span: bspan,
                            }
                        })
                        .collect();
                    entity.from.push(EntityFrom {
                        source,
                        bindings,
                        span,
                    });
                }
                _ => self.meta_item(p, meta),
            }
        }
        entity
    }

    fn attribute(
        &mut self,
        entity: Ident,
        items: Vec<Pair<'_, Rule>>,
        meta: &mut Meta,
    ) -> Attribute {
        let mut value = None;
        let mut pick = None;
        for p in items {
            let span = self.span(&p);
            match p.as_rule() {
                Rule::expr => value = Some(self.expr(p)),
                Rule::pick => {
                    let mut it = kids(p);
                    let latest = it.next().expect("pick direction").as_str() == "latest";
                    let by = self.ident(it.next().expect("pick column"));
                    pick = Some(Pick { latest, by, span });
                }
                _ => self.meta_item(p, meta),
            }
        }
        Attribute {
            entity,
            value: value.expect("attribute has a value"),
            pick,
        }
    }

    fn behavior(&mut self, entity: Ident, items: Vec<Pair<'_, Rule>>, meta: &mut Meta) -> Behavior {
        let mut it = items.into_iter();
        let source = self.ident(it.next().expect("behavior names a source"));
        let mut behavior = Behavior {
            entity,
            source,
            filter: None,
            at: None,
        };
        for p in it {
            match p.as_rule() {
                Rule::behavior_where => {
                    behavior.filter = Some(self.expr(kids(p).next().expect("where expr")))
                }
                Rule::behavior_at => {
                    behavior.at = Some(self.ident(kids(p).next().expect("at column")))
                }
                _ => self.meta_item(p, meta),
            }
        }
        behavior
    }

    fn journey(&mut self, entity: Ident, items: Vec<Pair<'_, Rule>>, meta: &mut Meta) -> Journey {
        let mut j = Journey {
            entity,
            entry: None,
            goal: None,
            exit: None,
            reentry: None,
            stages: Vec::new(),
        };
        for p in items {
            let span = self.span(&p);
            match p.as_rule() {
                Rule::journey_entry => {
                    let e = self.expr(kids(p).next().expect("entry expr"));
                    self.set_once(&mut j.entry, e, span, "entry");
                }
                Rule::journey_goal => {
                    let e = self.expr(kids(p).next().expect("goal expr"));
                    self.set_once(&mut j.goal, e, span, "goal");
                }
                Rule::journey_exit => {
                    let e = self.expr(kids(p).next().expect("exit expr"));
                    self.set_once(&mut j.exit, e, span, "exit");
                }
                Rule::journey_reentry => {
                    let policy_pair = kids(p).next().expect("reentry policy");
                    let policy = match policy_pair.as_rule() {
                        Rule::reentry_never => ReentryPolicy::Never,
                        Rule::reentry_always => ReentryPolicy::Always,
                        _ => ReentryPolicy::After(
                            self.duration(kids(policy_pair).next().expect("after duration")),
                        ),
                    };
                    self.set_once(&mut j.reentry, Reentry { policy, span }, span, "reentry");
                }
                Rule::stage => {
                    let mut it = kids(p).peekable();
                    let name = self.ident(it.next().expect("stage name"));
                    let description = if it.peek().is_some_and(|x| x.as_rule() == Rule::description)
                    {
                        let d = it.next().expect("peeked");
                        Some(self.string(d.into_inner().next().expect("description string")))
                    } else {
                        None
                    };
                    let steps = it.map(|s| self.step(s)).collect();
                    j.stages.push(Stage {
                        name,
                        description,
                        steps,
                        span,
                    });
                }
                _ => self.meta_item(p, meta),
            }
        }
        j
    }

    fn step(&mut self, pair: Pair<'_, Rule>) -> Step {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::step_activate => {
                StepKind::Activate(self.ident(kids(pair).next().expect("activation name")))
            }
            Rule::step_wait => {
                StepKind::Wait(self.duration(kids(pair).next().expect("wait duration")))
            }
            Rule::step_wait_until => {
                let mut it = kids(pair);
                let condition = self.expr(it.next().expect("until expr"));
                let timeout = self.duration(it.next().expect("timeout"));
                StepKind::WaitUntil { condition, timeout }
            }
            Rule::step_branch => {
                let mut arms = Vec::new();
                let mut otherwise = None;
                for arm in kids(pair) {
                    let aspan = self.span(&arm);
                    match arm.as_rule() {
                        Rule::branch_when => {
                            let mut it = kids(arm);
                            let condition = self.expr(it.next().expect("when expr"));
                            let then = self.step_block(it.next().expect("when block"));
                            arms.push(BranchArm {
                                condition,
                                then,
                                span: aspan,
                            });
                        }
                        _ => {
                            otherwise = Some(self.step_block(kids(arm).next().expect("else block")))
                        }
                    }
                }
                StepKind::Branch { arms, otherwise }
            }
            Rule::step_split => {
                let arms = kids(pair)
                    .map(|arm| {
                        let aspan = self.span(&arm);
                        let mut it = kids(arm);
                        let pct = it.next().expect("split percent");
                        let basis_points = self.percent(pct);
                        let then = self.step_block(it.next().expect("split block"));
                        SplitArm {
                            basis_points,
                            then,
                            span: aspan,
                        }
                    })
                    .collect();
                StepKind::Split(arms)
            }
            Rule::step_jump => StepKind::Jump(self.ident(kids(pair).next().expect("jump target"))),
            Rule::step_end => StepKind::End,
            other => unreachable!("not a step: {other:?}"),
        };
        Step { kind, span }
    }

    fn percent(&mut self, pair: Pair<'_, Rule>) -> u32 {
        let span = self.span(&pair);
        let text = pair.as_str().trim_end_matches('%');
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let parsed = whole
            .parse::<u32>()
            .ok()
            .filter(|_| frac.len() <= 2)
            .and_then(|w| {
                let f = format!("{frac:0<2}").parse::<u32>().ok()?;
                w.checked_mul(100)?.checked_add(f)
            });
        match parsed {
            Some(bp) if bp <= 10_000 => bp,
            _ => {
                self.diagnostics.push(Diagnostic::error(
                    "bad-split",
                    span,
                    format!(
                        "`{}` is not a percentage between 0% and 100% with at most two decimals",
                        pair.as_str()
                    ),
                ));
                0
            }
        }
    }

    fn step_block(&mut self, pair: Pair<'_, Rule>) -> StepBlock {
        let span = self.span(&pair);
        let braced = pair.as_str().starts_with('{');
        let steps = kids(pair).map(|s| self.step(s)).collect();
        StepBlock {
            steps,
            braced,
            span,
        }
    }

    fn metric(&mut self, entity: Ident, items: Vec<Pair<'_, Rule>>, meta: &mut Meta) -> Metric {
        let mut m = Metric {
            entity,
            segments: Vec::new(),
            measures: Vec::new(),
            grain: None,
        };
        for p in items {
            let span = self.span(&p);
            match p.as_rule() {
                Rule::metric_segments => {
                    if !m.segments.is_empty() {
                        self.twice(span, "segments");
                    }
                    m.segments = kids(p).map(|i| self.ident(i)).collect();
                }
                Rule::measure => {
                    let mut it = kids(p);
                    let name = self.ident(it.next().expect("measure name"));
                    let value = self.expr(it.next().expect("measure expr"));
                    m.measures.push(Measure { name, value, span });
                }
                Rule::metric_grain => {
                    let d = self.duration(kids(p).next().expect("grain duration"));
                    self.set_once(&mut m.grain, d, span, "grain");
                }
                _ => self.meta_item(p, meta),
            }
        }
        m
    }

    fn activation(
        &mut self,
        entity: Ident,
        items: Vec<Pair<'_, Rule>>,
        meta: &mut Meta,
    ) -> Activation {
        let mut a = Activation {
            entity,
            segment: None,
            destination: None,
            columns: Vec::new(),
            schedule: None,
            delivery: None,
        };
        for p in items {
            let span = self.span(&p);
            match p.as_rule() {
                Rule::activation_segment => {
                    let s = self.ident(kids(p).next().expect("segment name"));
                    self.set_once(&mut a.segment, s, span, "segment");
                }
                Rule::destination => {
                    let d = kids(p).next().expect("destination kind");
                    let mut it = kids(d.clone());
                    let kind = match d.as_rule() {
                        Rule::dest_file => {
                            let path = self.string(it.next().expect("file path"));
                            let format = it.next().map(|f| match f.as_str() {
                                "csv" => FileFormat::Csv,
                                _ => FileFormat::Parquet,
                            });
                            DestinationKind::File { path, format }
                        }
                        Rule::dest_webhook => DestinationKind::Webhook {
                            url: self.string(it.next().expect("url")),
                        },
                        _ => {
                            let connection = self.string(it.next().expect("connection"));
                            let table = it.next().map(|t| self.string(t));
                            DestinationKind::Postgres { connection, table }
                        }
                    };
                    self.set_once(&mut a.destination, Destination { kind, span }, span, "to");
                }
                Rule::activation_columns => {
                    if !a.columns.is_empty() {
                        self.twice(span, "columns");
                    }
                    a.columns = kids(p).map(|i| self.ident(i)).collect();
                }
                Rule::schedule => {
                    let s = kids(p).next().expect("schedule kind");
                    let kind = match s.as_rule() {
                        Rule::schedule_once => ScheduleKind::Once,
                        Rule::schedule_every => {
                            ScheduleKind::Every(self.duration(kids(s).next().expect("every")))
                        }
                        _ => ScheduleKind::Cron(self.string(kids(s).next().expect("cron"))),
                    };
                    self.set_once(&mut a.schedule, Schedule { kind, span }, span, "schedule");
                }
                Rule::delivery => {
                    let mode = match kids(p).next().expect("delivery mode").as_str() {
                        "full" => Delivery::Full,
                        _ => Delivery::Changes,
                    };
                    self.set_once(&mut a.delivery, (mode, span), span, "deliver");
                }
                _ => self.meta_item(p, meta),
            }
        }
        a
    }

    // -------------------------------------------------------------------------- expressions

    fn expr(&mut self, pair: Pair<'_, Rule>) -> Expr {
        if self.expr_depth == 0 && pair.clone().into_inner().flatten().count() > MAX_EXPR_TOKENS {
            let span = self.span(&pair);
            self.diagnostics.push(
                Diagnostic::error(
                    "too-long",
                    span,
                    format!("expression has more than {MAX_EXPR_TOKENS} tokens"),
                )
                .with_help("split it into several features or segments"),
            );
            return Expr {
                kind: ExprKind::Null,
                span,
            };
        }
        self.expr_depth += 1;
        let expr = self.pratt(pair.into_inner());
        self.expr_depth -= 1;
        expr
    }

    fn pratt(&mut self, pairs: Pairs<'_, Rule>) -> Expr {
        // The closures of a PrattParser cannot share `&mut self`; a RefCell gives them turns.
        let cell = std::cell::RefCell::new(self);
        let expr = pratt_parser()
            .map_primary(|p| cell.borrow_mut().primary(p))
            .map_prefix(|op, operand| {
                let b = cell.borrow();
                let span = b.span(&op).to(operand.span);
                let op = if op.as_rule() == Rule::not {
                    UnaryOp::Not
                } else {
                    UnaryOp::Neg
                };
                Expr {
                    kind: ExprKind::Unary {
                        op,
                        operand: Box::new(operand),
                    },
                    span,
                }
            })
            .map_postfix(|subject, op| cell.borrow_mut().postfix(subject, op))
            .map_infix(|left, op, right| {
                let op = match op.as_rule() {
                    Rule::or => BinaryOp::Or,
                    Rule::and => BinaryOp::And,
                    Rule::eq => BinaryOp::Eq,
                    Rule::ne => BinaryOp::Ne,
                    Rule::lt => BinaryOp::Lt,
                    Rule::le => BinaryOp::Le,
                    Rule::gt => BinaryOp::Gt,
                    Rule::ge => BinaryOp::Ge,
                    Rule::add => BinaryOp::Add,
                    Rule::sub => BinaryOp::Sub,
                    Rule::mul => BinaryOp::Mul,
                    Rule::div => BinaryOp::Div,
                    _ => BinaryOp::Rem,
                };
                let span = left.span.to(right.span);
                Expr {
                    kind: ExprKind::Binary {
                        op,
                        left: Box::new(left),
                        right: Box::new(right),
                    },
                    span,
                }
            })
            .parse(pairs);
        expr
    }

    fn postfix(&mut self, subject: Expr, op: Pair<'_, Rule>) -> Expr {
        let span = subject.span.to(self.span(&op));
        let rule = op.as_rule();
        let mut negated = false;
        let mut args = Vec::new();
        for p in kids(op) {
            match p.as_rule() {
                Rule::negated => negated = true,
                _ => args.push(p),
            }
        }
        let mut args = args.into_iter();
        let mut operand =
            |b: &mut Builder| Box::new(b.pratt(args.next().expect("operand").into_inner()));
        let predicate = match rule {
            Rule::is_null => Predicate::IsNull,
            Rule::is_set => Predicate::IsSet,
            Rule::in_list => {
                let list = args.next().expect("in list");
                Predicate::In(kids(list).map(|e| self.expr(e)).collect())
            }
            Rule::between => {
                let low = operand(self);
                let high = operand(self);
                Predicate::Between(low, high)
            }
            Rule::contains => Predicate::Contains(operand(self)),
            Rule::starts_with => Predicate::StartsWith(operand(self)),
            Rule::ends_with => Predicate::EndsWith(operand(self)),
            Rule::matches => Predicate::Matches(operand(self)),
            Rule::within_last => {
                Predicate::WithinLast(self.duration(args.next().expect("duration")))
            }
            Rule::before => Predicate::Before(operand(self)),
            _ => Predicate::After(operand(self)),
        };
        Expr {
            kind: ExprKind::Predicate {
                subject: Box::new(subject),
                negated,
                predicate,
            },
            span,
        }
    }

    fn primary(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::null_lit => ExprKind::Null,
            Rule::true_lit => ExprKind::Bool(true),
            Rule::false_lit => ExprKind::Bool(false),
            Rule::number => ExprKind::Number(pair.as_str().to_string()),
            Rule::string => ExprKind::String(self.string(pair).value),
            Rule::duration => ExprKind::Duration(self.duration(pair)),
            Rule::date_lit => {
                ExprKind::Date(self.string(kids(pair).next().expect("date string")).value)
            }
            Rule::timestamp_lit => ExprKind::Timestamp(
                self.string(kids(pair).next().expect("timestamp string"))
                    .value,
            ),
            Rule::list => ExprKind::List(kids(pair).map(|e| self.expr(e)).collect()),
            Rule::paren => {
                ExprKind::Paren(Box::new(self.expr(kids(pair).next().expect("paren expr"))))
            }
            Rule::path => ExprKind::Path(kids(pair).map(|i| self.ident(i)).collect()),
            Rule::call => {
                let mut it = kids(pair);
                let function = self.ident(it.next().expect("call name"));
                let mut call = Call {
                    function,
                    args: Vec::new(),
                    filter: None,
                    window: None,
                };
                for p in it {
                    match p.as_rule() {
                        Rule::call_args => {
                            for a in kids(p) {
                                match a.as_rule() {
                                    Rule::call_where => {
                                        call.filter = Some(Box::new(
                                            self.expr(kids(a).next().expect("where expr")),
                                        ))
                                    }
                                    _ => call.args.push(self.expr(a)),
                                }
                            }
                        }
                        _ => {
                            call.window =
                                Some(self.duration(kids(p).next().expect("window duration")))
                        }
                    }
                }
                ExprKind::Call(call)
            }
            Rule::sequence => {
                let mut it = kids(pair);
                let first = self.seq_step(it.next().expect("first step"));
                let mut seq = Sequence {
                    first,
                    then: Vec::new(),
                    window: None,
                };
                for p in it {
                    match p.as_rule() {
                        Rule::seq_then => {
                            let tspan = self.span(&p);
                            let mut negated = false;
                            let mut step = None;
                            let mut within = None;
                            for q in kids(p) {
                                match q.as_rule() {
                                    Rule::negated => negated = true,
                                    Rule::seq_step => step = Some(self.seq_step(q)),
                                    _ => within = Some(self.duration(q)),
                                }
                            }
                            seq.then.push(SequenceThen {
                                negated,
                                step: step.expect("then step"),
                                within: within.expect("then within"),
                                span: tspan,
                            });
                        }
                        _ => {
                            seq.window =
                                Some(self.duration(kids(p).next().expect("window duration")))
                        }
                    }
                }
                ExprKind::Sequence(seq)
            }
            Rule::expr | Rule::operand => return self.expr(pair),
            other => unreachable!("not a primary: {other:?}"),
        };
        Expr { kind, span }
    }

    fn seq_step(&mut self, pair: Pair<'_, Rule>) -> SequenceStep {
        let span = self.span(&pair);
        let mut it = kids(pair);
        let behavior = self.ident(it.next().expect("step behavior"));
        let filter = it.next().map(|e| Box::new(self.expr(e)));
        SequenceStep {
            behavior,
            filter,
            span,
        }
    }
}

fn pratt_parser() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::or, Assoc::Left))
            .op(Op::infix(Rule::and, Assoc::Left))
            .op(Op::prefix(Rule::not))
            .op(Op::infix(Rule::eq, Assoc::Left)
                | Op::infix(Rule::ne, Assoc::Left)
                | Op::infix(Rule::lt, Assoc::Left)
                | Op::infix(Rule::le, Assoc::Left)
                | Op::infix(Rule::gt, Assoc::Left)
                | Op::infix(Rule::ge, Assoc::Left)
                | Op::postfix(Rule::is_null)
                | Op::postfix(Rule::is_set)
                | Op::postfix(Rule::in_list)
                | Op::postfix(Rule::between)
                | Op::postfix(Rule::contains)
                | Op::postfix(Rule::starts_with)
                | Op::postfix(Rule::ends_with)
                | Op::postfix(Rule::matches)
                | Op::postfix(Rule::within_last)
                | Op::postfix(Rule::before)
                | Op::postfix(Rule::after))
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left)
                | Op::infix(Rule::div, Assoc::Left)
                | Op::infix(Rule::rem, Assoc::Left))
            .op(Op::prefix(Rule::neg))
    })
}

include!(concat!(env!("OUT_DIR"), "/keywords.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_end_at_the_last_token_not_at_trailing_comments() {
        let text = "source s {\n  columns { a: string  # note\n  b: int }\n}\n";
        let parsed = parse_file(FileId(0), text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let DefKind::Source(s) = &parsed.file.definitions[0].kind else {
            panic!("not a source")
        };
        let a = &s.columns[0];
        assert_eq!(
            &text[a.span.start as usize..a.span.end as usize],
            "a: string"
        );
    }

    #[test]
    fn every_syntax_error_of_a_file_is_reported() {
        let text = "feature a of c = \nfeature b of c = 1\nsegment s of c { x = }\n";
        let parsed = parse_file(FileId(0), text);
        assert_eq!(parsed.diagnostics.len(), 2, "{:?}", parsed.diagnostics);
        assert_eq!(parsed.file.definitions.len(), 1);
    }

    #[test]
    fn brackets_in_quoted_names_do_not_count_as_nesting() {
        let deep = format!("feature `(` of c = {}1{}", "(".repeat(60), ")".repeat(60));
        assert!(too_deep(&deep).is_none());
        let too = format!("feature f of c = {}1{}", "(".repeat(70), ")".repeat(70));
        assert!(too_deep(&too).is_some());
    }
}
