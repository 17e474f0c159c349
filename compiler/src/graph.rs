//! The dependency graph of a project's definitions: who reads whom, in which order to compute.

use serde::Serialize;

/// One definition in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    /// The definition keyword: `source`, `feature`, …
    pub kind: &'static str,
}

/// Definitions and their dependencies; an edge `(a, b)` means `a` reads `b` (b is upstream).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DepGraph {
    pub nodes: Vec<Node>,
    pub edges: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Text,
}

impl DepGraph {
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Direct upstream definitions of node `i`.
    pub fn upstream(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.edges.iter().filter(move |e| e.0 == i).map(|e| e.1)
    }

    /// Direct downstream definitions of node `i`.
    pub fn downstream(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.edges.iter().filter(move |e| e.1 == i).map(|e| e.0)
    }

    /// Nodes ordered so that every node comes after everything it reads (Kahn's algorithm,
    /// ties by index so the order is stable). Nodes on a cycle are left out.
    pub fn topological_order(&self) -> Vec<usize> {
        let n = self.nodes.len();
        let mut pending = vec![0usize; n];
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &(a, b) in &self.edges {
            pending[a] += 1;
            readers[b].push(a);
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|&i| pending[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &r in &readers[i] {
                pending[r] -= 1;
                if pending[r] == 0 {
                    ready.insert(r);
                }
            }
        }
        order
    }

    pub fn render(&self, format: GraphFormat) -> String {
        match format {
            GraphFormat::Dot => self.to_dot(),
            GraphFormat::Mermaid => self.to_mermaid(),
            GraphFormat::Text => self.to_text(),
        }
    }

    fn to_dot(&self) -> String {
        let mut out =
            String::from("digraph cdp {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
        for node in &self.nodes {
            out.push_str(&format!(
                "  \"{}\" [label=\"{}\\n{}\", shape={}];\n",
                node.name,
                node.kind,
                node.name,
                shape(node.kind)
            ));
        }
        for &(a, b) in &self.edges {
            out.push_str(&format!(
                "  \"{}\" -> \"{}\";\n",
                self.nodes[b].name, self.nodes[a].name
            ));
        }
        out.push_str("}\n");
        out
    }

    fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for (i, node) in self.nodes.iter().enumerate() {
            out.push_str(&format!("  n{i}[\"{} {}\"]\n", node.kind, node.name));
        }
        for &(a, b) in &self.edges {
            out.push_str(&format!("  n{b} --> n{a}\n"));
        }
        out
    }

    /// Definitions in computation order, each with what it reads.
    fn to_text(&self) -> String {
        let mut out = String::new();
        for i in self.topological_order() {
            let node = &self.nodes[i];
            let mut ups: Vec<&str> = self
                .upstream(i)
                .map(|u| self.nodes[u].name.as_str())
                .collect();
            ups.sort_unstable();
            if ups.is_empty() {
                out.push_str(&format!("{} {}\n", node.kind, node.name));
            } else {
                out.push_str(&format!(
                    "{} {} <- {}\n",
                    node.kind,
                    node.name,
                    ups.join(", ")
                ));
            }
        }
        out
    }
}

fn shape(kind: &str) -> &'static str {
    match kind {
        "source" => "cylinder",
        "entity" => "house",
        "segment" => "hexagon",
        "journey" => "cds",
        "activation" => "rarrow",
        "metric" => "note",
        _ => "box",
    }
}
