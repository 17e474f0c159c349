//! Static validation of journeys: every path ends, nothing is unreachable, every branch has an
//! `else`, splits add up to 100%, jumps land on stages that exist.

use std::collections::HashMap;

use cdp_grammar::ast::{Journey, Stage, Step, StepBlock, StepKind};
use cdp_grammar::{Diagnostic, Span};

/// Calls `f` on every step of the journey, including steps nested in branch and split arms.
pub fn for_each_step<'a>(stages: &'a [Stage], f: &mut impl FnMut(&'a Step)) {
    fn walk<'a>(steps: &'a [Step], f: &mut impl FnMut(&'a Step)) {
        for step in steps {
            f(step);
            match &step.kind {
                StepKind::Branch { arms, otherwise } => {
                    for arm in arms {
                        walk(&arm.then.steps, f);
                    }
                    if let Some(block) = otherwise {
                        walk(&block.steps, f);
                    }
                }
                StepKind::Split(arms) => {
                    for arm in arms {
                        walk(&arm.then.steps, f);
                    }
                }
                _ => {}
            }
        }
    }
    for stage in stages {
        walk(&stage.steps, f);
    }
}

/// Checks the control flow of one journey; `span` is the journey's name, for journey-wide errors.
pub fn validate(journey: &Journey, span: Span, diags: &mut Vec<Diagnostic>) {
    if journey.entry.is_none() {
        diags.push(
            Diagnostic::error("journey-entry", span, "journey has no `entry`")
                .with_help("add `entry <segment or condition>`: who enters the journey"),
        );
    }
    if journey.stages.is_empty() {
        diags.push(
            Diagnostic::error("journey-empty", span, "journey has no stages")
                .with_help("add `stage <name> { activate … end }`"),
        );
        return;
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, stage) in journey.stages.iter().enumerate() {
        if let Some(&first) = index.get(stage.name.name.as_str()) {
            diags.push(
                Diagnostic::error(
                    "duplicate-name",
                    stage.name.span,
                    format!("stage `{}` is defined twice", stage.name.name),
                )
                .with_related(journey.stages[first].name.span, "first defined here"),
            );
        } else {
            index.insert(&stage.name.name, i);
        }
    }

    let mut flows = Vec::with_capacity(journey.stages.len());
    for stage in &journey.stages {
        let mut flow = Flow { jumps: Vec::new() };
        let falls_through = flow.block(&stage.steps, diags);
        flows.push((falls_through, flow.jumps));
    }
    for (_, jumps) in &flows {
        for target in jumps {
            if !index.contains_key(target.0.as_str()) {
                diags.push(
                    Diagnostic::error(
                        "unknown-stage",
                        target.1,
                        format!("no stage named `{}` in this journey", target.0),
                    )
                    .with_suggestion(
                        &target.0,
                        journey.stages.iter().map(|s| s.name.name.as_str()),
                    ),
                );
            }
        }
    }

    // Reachability: the first stage; a stage after one that falls through; any jump target.
    let mut reached = vec![false; journey.stages.len()];
    let mut work = vec![0usize];
    while let Some(i) = work.pop() {
        if std::mem::replace(&mut reached[i], true) {
            continue;
        }
        let (falls_through, jumps) = &flows[i];
        if *falls_through && i + 1 < journey.stages.len() {
            work.push(i + 1);
        }
        work.extend(
            jumps
                .iter()
                .filter_map(|(name, _)| index.get(name.as_str()).copied()),
        );
    }
    for (i, stage) in journey.stages.iter().enumerate() {
        if !reached[i] {
            diags.push(
                Diagnostic::error(
                    "unreachable",
                    stage.name.span,
                    format!("stage `{}` is never reached", stage.name.name),
                )
                .with_label("no path leads here")
                .with_help("jump to it from another stage, or remove it"),
            );
        }
    }
    let last = journey.stages.len() - 1;
    if flows[last].0 && reached[last] {
        let stage = &journey.stages[last];
        diags.push(
            Diagnostic::error(
                "journey-dead-end",
                stage.name.span,
                format!(
                    "a path through stage `{}` never reaches `end`",
                    stage.name.name
                ),
            )
            .with_label("the last stage can finish without `end` or `jump`")
            .with_help("end every path with `end` (or `jump` to a stage)"),
        );
    }
}

struct Flow {
    /// Jump targets seen in reachable steps, with their spans.
    jumps: Vec<(String, Span)>,
}

impl Flow {
    /// Walks a block; returns whether a path can fall off its end. Reports the first step after
    /// which nothing can run, and branches without `else`, and splits not adding up.
    fn block(&mut self, steps: &[Step], diags: &mut Vec<Diagnostic>) -> bool {
        let mut live = true;
        for step in steps {
            if !live {
                diags.push(
                    Diagnostic::error("unreachable", step.span, "unreachable step")
                        .with_label("every path before this ends or jumps away"),
                );
                return false;
            }
            live = self.step(step, diags);
        }
        live
    }

    fn step(&mut self, step: &Step, diags: &mut Vec<Diagnostic>) -> bool {
        match &step.kind {
            StepKind::Activate(_) | StepKind::Wait(_) | StepKind::WaitUntil { .. } => true,
            StepKind::End => false,
            StepKind::Jump(target) => {
                self.jumps.push((target.name.clone(), target.span));
                false
            }
            StepKind::Branch { arms, otherwise } => {
                if arms.is_empty() {
                    diags.push(Diagnostic::error(
                        "journey-branch",
                        step.span,
                        "branch has no `when` arm",
                    ));
                }
                let mut through = false;
                for arm in arms {
                    through |= self.arm(&arm.then, diags);
                }
                match otherwise {
                    Some(block) => through |= self.arm(block, diags),
                    None => {
                        diags.push(
                            Diagnostic::error("journey-branch", step.span, "branch has no `else`")
                                .with_label("profiles matching no `when` would have nowhere to go")
                                .with_help("add `else -> …` (e.g. `else -> end`)"),
                        );
                        through = true;
                    }
                }
                through
            }
            StepKind::Split(arms) => {
                let total: u32 = arms.iter().map(|a| a.basis_points).sum();
                if arms.len() < 2 {
                    diags.push(
                        Diagnostic::error(
                            "bad-split",
                            step.span,
                            "a split needs at least two arms",
                        )
                        .with_help("e.g. `split { 50% -> activate a, 50% -> activate b }`"),
                    );
                } else if total != 10_000 {
                    diags.push(
                        Diagnostic::error(
                            "bad-split",
                            step.span,
                            format!("split percentages add up to {}, not 100%", percent(total)),
                        )
                        .with_label("the arms must cover every profile exactly once"),
                    );
                }
                let mut through = false;
                for arm in arms {
                    through |= self.arm(&arm.then, diags);
                }
                through
            }
        }
    }

    fn arm(&mut self, block: &StepBlock, diags: &mut Vec<Diagnostic>) -> bool {
        self.block(&block.steps, diags)
    }
}

fn percent(basis_points: u32) -> String {
    if basis_points.is_multiple_of(100) {
        format!("{}%", basis_points / 100)
    } else {
        format!("{}.{:02}%", basis_points / 100, basis_points % 100)
    }
}
