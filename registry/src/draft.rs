//! The definitions of a project as its files hold them now (drafts), each reduced to the content a
//! version is made of: kind, name and canonical text, addressed by a hash of the three.
//!
//! The canonical text is what `cdp fmt` prints for the definition, with the comments written
//! inside it, so a change of layout alone leaves the hash, and so the version, as it was.

use cdp_compiler::{Checked, ProjectSources};
use cdp_grammar::ast::{self, Definition};
use sha2::{Digest, Sha256};

/// One definition of the project, ready to be compared with the registry and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The definition keyword: `source`, `feature`, `segment`, …
    pub kind: String,
    pub name: String,
    /// The canonical formatted source of the definition, ending with a line break.
    pub text: String,
    /// The content address: [`content_hash`] of kind, name and text.
    pub hash: String,
    /// Where it is written: the file relative to the project and the 1-based line of its keyword.
    pub file: String,
    pub line: usize,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    /// The definitions it reads directly, by name, sorted.
    pub upstream: Vec<String>,
}

/// The drafts of a checked project, in file order. The project should check without errors:
/// with errors, names may repeat and dependencies are incomplete.
pub fn drafts(project: &ProjectSources, checked: &Checked) -> Vec<Draft> {
    let mut drafts = Vec::new();
    // Graph nodes are the definitions in file order, so a running index finds each one's node.
    let mut node = 0;
    for (file_id, file) in &checked.files {
        let source = project.map.get(*file_id);
        for def in &file.definitions {
            let mut upstream: Vec<String> = checked
                .graph
                .upstream(node)
                .map(|i| checked.graph.nodes[i].name.clone())
                .collect();
            upstream.sort_unstable();
            upstream.dedup();
            node += 1;
            let kind = def.kind.keyword().to_string();
            let name = def.name.name.clone();
            let text = canonical_text(def, file, &source.text);
            drafts.push(Draft {
                hash: content_hash(&kind, &name, &text),
                kind,
                name,
                text,
                file: source.path.clone(),
                line: source.line_col(def.span.start as usize).0,
                description: def.meta.description.as_ref().map(|s| s.value.clone()),
                owner: def.meta.owner.as_ref().map(|s| s.value.clone()),
                tags: def.meta.tags.iter().map(|s| s.value.clone()).collect(),
                upstream,
            });
        }
    }
    drafts
}

/// `cdp fmt`'s text of one definition of `file` (parsed from `source`), with the comments inside
/// the definition; comments before or after it belong to the file, not to the definition.
pub fn canonical_text(def: &Definition, file: &ast::File, source: &str) -> String {
    let comments = file
        .comments
        .iter()
        .filter(|c| def.span.start <= c.span.start && c.span.end <= def.span.end)
        .cloned()
        .collect();
    let alone = ast::File {
        definitions: vec![def.clone()],
        comments,
    };
    cdp_grammar::print_file(&alone, source)
}

/// The content address of a version: SHA-256 of kind, name and canonical text, in hex.
pub fn content_hash(kind: &str, name: &str, text: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [kind, name, text] {
        // Lengths first, so that no two different triples hash the same bytes.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
