//! What can change a profile value besides time: the events of which behaviors and the rows of
//! which sources. An evaluation after events recomputes only the values (and works out again
//! only the next-change instants of the watched conditions) whose inputs those events touched;
//! the rest are as the last evaluation left them.
//!
//! The sets are 64-bit masks, a behavior or source at bit `index % 64`: in a project with more
//! than 64 of either, two share a bit and an event of one also recomputes what reads the other.
//! That costs work, never a wrong value.

use std::collections::HashMap;

use cdp_compiler::ir::{self, AttributeValue, BehaviorId, Expr, ExprKind, SourceId};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Inputs {
    behaviors: u64,
    sources: u64,
}

impl Inputs {
    pub(crate) const NONE: Inputs = Inputs {
        behaviors: 0,
        sources: 0,
    };
    /// Everything: after a merge, or when nothing was evaluated yet.
    pub(crate) const ALL: Inputs = Inputs {
        behaviors: u64::MAX,
        sources: u64::MAX,
    };

    pub(crate) fn behavior(b: BehaviorId) -> Inputs {
        Inputs {
            behaviors: 1 << (b.0 % 64),
            sources: 0,
        }
    }

    pub(crate) fn source(s: SourceId) -> Inputs {
        Inputs {
            behaviors: 0,
            sources: 1 << (s.0 % 64),
        }
    }

    pub(crate) fn add(&mut self, o: Inputs) {
        self.behaviors |= o.behaviors;
        self.sources |= o.sources;
    }

    /// Whether the two share an input.
    pub(crate) fn meets(self, o: Inputs) -> bool {
        self.behaviors & o.behaviors != 0 || self.sources & o.sources != 0
    }
}

/// The inputs of expressions over one project's profile values, through the definitions of the
/// values they read.
pub(crate) struct Reads<'a> {
    p: &'a ir::Project,
    memo: HashMap<(u8, u32), Inputs>,
}

impl<'a> Reads<'a> {
    pub(crate) fn new(p: &'a ir::Project) -> Reads<'a> {
        Reads {
            p,
            memo: HashMap::new(),
        }
    }

    /// The inputs of a profile expression.
    pub(crate) fn of(&mut self, e: &Expr) -> Inputs {
        let mut refs = Vec::new();
        e.walk(|x| match &x.kind {
            ExprKind::Attribute(a) => refs.push((0, a.0)),
            ExprKind::Feature(f) => refs.push((1, f.0)),
            ExprKind::Segment(s) => refs.push((2, s.0)),
            ExprKind::Aggregate(a) => refs.push((3, a.0)),
            ExprKind::Sequence(q) => refs.push((4, q.0)),
            _ => {}
        });
        let mut inputs = Inputs::NONE;
        for r in refs {
            inputs.add(self.of_value(r));
        }
        inputs
    }

    /// The inputs of an attribute (0), feature (1), segment (2), aggregate (3) or sequence (4).
    pub(crate) fn of_value(&mut self, r: (u8, u32)) -> Inputs {
        if let Some(i) = self.memo.get(&r) {
            return *i;
        }
        let p = self.p;
        let i = r.1 as usize;
        let inputs = match r.0 {
            0 => match &p.attributes[i].value {
                AttributeValue::FromSource { source, .. } => Inputs::source(*source),
                AttributeValue::Derived(e) => self.of(e),
            },
            1 => self.of(&p.features[i].value),
            2 => self.of(&p.segments[i].condition),
            3 => Inputs::behavior(p.aggregates[i].behavior),
            _ => {
                let seq = &p.sequences[i];
                let mut inputs = Inputs::behavior(seq.first.behavior);
                for step in &seq.then {
                    inputs.add(Inputs::behavior(step.step.behavior));
                }
                inputs
            }
        };
        self.memo.insert(r, inputs);
        inputs
    }
}
