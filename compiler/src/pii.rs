//! Which profile values carry personal data, derived from the source columns marked `pii`.
//!
//! A value *reads* personal data when its expression reaches a `pii` column: directly (an
//! attribute taken from a source, an aggregate over a behavior's rows) or through other
//! attributes, features and aggregates. Of those, the values that *show* personal data are the
//! ones whose type can hold it — text, dates, times, lists. A count, a sum, an age or a flag
//! computed from personal data shows none of it. Readers without the right to see personal data
//! get the values that show it masked (the registry's API and pages, `cdp profile`).

use std::collections::BTreeSet;

use crate::ir::{AttributeValue, Expr, ExprKind, Project, SourceId};
use crate::types::Type;

/// What personal data each value of a project reads and shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pii {
    /// Attributes, features and segments whose value is computed from personal data.
    pub reads: BTreeSet<String>,
    /// Of those, the ones whose values show it: they are masked for readers without the right.
    pub shows: BTreeSet<String>,
}

impl Pii {
    /// Whether the value of profile column `name` is masked for readers without the PII right.
    pub fn masked(&self, name: &str) -> bool {
        self.shows.contains(name)
    }
}

/// Whether a value of this type can show personal data.
fn can_show(ty: &Type) -> bool {
    !matches!(
        ty,
        Type::Int | Type::Float | Type::Decimal { .. } | Type::Bool | Type::Duration
    )
}

/// The personal data of every attribute, feature and segment of `project`.
pub fn profile_pii(project: &Project) -> Pii {
    let column_pii = |source: SourceId, e: &Expr| {
        let columns = &project.sources[source.index()].columns;
        let mut found = false;
        e.walk(|x| {
            if let ExprKind::Column(c) = &x.kind {
                found |= columns.get(c.index()).is_some_and(|c| c.pii);
            }
        });
        found
    };
    let aggregates: Vec<bool> = project
        .aggregates
        .iter()
        .map(|a| {
            let source = project.behaviors[a.behavior.index()].source;
            a.value.as_ref().is_some_and(|v| column_pii(source, v))
                || a.filter.as_ref().is_some_and(|f| column_pii(source, f))
        })
        .collect();
    let mut attributes = vec![false; project.attributes.len()];
    let mut features = vec![false; project.features.len()];
    let mut segments = vec![false; project.segments.len()];
    let profile_reads = |e: &Expr, attributes: &[bool], features: &[bool], segments: &[bool]| {
        let mut found = false;
        e.walk(|x| {
            found |= match &x.kind {
                ExprKind::Attribute(a) => attributes[a.index()],
                ExprKind::Feature(f) => features[f.index()],
                ExprKind::Segment(s) => segments[s.index()],
                ExprKind::Aggregate(a) => aggregates[a.index()],
                _ => false,
            }
        });
        found
    };
    // In profile order, each value comes after what it reads.
    for value in &project.profile_order {
        match *value {
            crate::ir::ProfileValue::Attribute(a) => {
                attributes[a.index()] = match &project.attributes[a.index()].value {
                    AttributeValue::FromSource { source, value, .. } => column_pii(*source, value),
                    AttributeValue::Derived(e) => {
                        profile_reads(e, &attributes, &features, &segments)
                    }
                }
            }
            crate::ir::ProfileValue::Feature(f) => {
                features[f.index()] = profile_reads(
                    &project.features[f.index()].value,
                    &attributes,
                    &features,
                    &segments,
                )
            }
            crate::ir::ProfileValue::Segment(s) => {
                segments[s.index()] = profile_reads(
                    &project.segments[s.index()].condition,
                    &attributes,
                    &features,
                    &segments,
                )
            }
        }
    }
    let mut pii = Pii::default();
    let mut note = |name: &str, reads: bool, ty: &Type| {
        if reads {
            pii.reads.insert(name.to_string());
            if can_show(ty) {
                pii.shows.insert(name.to_string());
            }
        }
    };
    for (a, reads) in project.attributes.iter().zip(&attributes) {
        note(&a.meta.name, *reads, &a.ty);
    }
    for (f, reads) in project.features.iter().zip(&features) {
        note(&f.meta.name, *reads, &f.ty);
    }
    for (s, reads) in project.segments.iter().zip(&segments) {
        note(&s.meta.name, *reads, &Type::Bool);
    }
    pii
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retail_masks_what_shows_personal_data_and_nothing_else() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/retail");
        let sources = crate::load_project(&root).unwrap();
        let project = crate::lower(&crate::check(&sources)).unwrap();
        let pii = profile_pii(&project);
        // Taken from `pii` columns, text or dates: shown, so masked.
        for name in [
            "contact_email",
            "first_name",
            "birth_date",
            "checkout_email",
        ] {
            assert!(pii.masked(name), "{name}: {pii:?}");
        }
        // Computed from personal data but showing none of it.
        assert!(pii.reads.contains("age") && !pii.masked("age"), "{pii:?}");
        // Not personal at all.
        for name in ["lifetime_value", "orders_total", "country", "high_value"] {
            assert!(!pii.masked(name), "{name}: {pii:?}");
        }
        assert!(pii.shows.is_subset(&pii.reads));
    }
}
