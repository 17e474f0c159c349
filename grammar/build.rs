//! Generates `keyword_text`, the table of keyword rules, from the grammar itself so the two
//! never drift: every `kw_x = @{ "x" … }` rule becomes one match arm.
use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-changed=src/cdp.pest");
    let grammar = std::fs::read_to_string("src/cdp.pest").expect("grammar is readable");
    let mut arms = String::new();
    for line in grammar.lines() {
        let Some(rest) = line.strip_prefix("kw_") else {
            continue;
        };
        let Some((name, body)) = rest.split_once(" = @{ \"") else {
            continue;
        };
        let word = body.split('"').next().unwrap_or(name);
        writeln!(arms, "        Rule::kw_{name} => Some(\"`{word}`\"),").unwrap();
    }
    let code = format!(
        "/// The keyword a keyword rule matches, quoted for messages; `None` for other rules.\n\
         fn keyword_text(rule: Rule) -> Option<&'static str> {{\n    match rule {{\n{arms}        _ => None,\n    }}\n}}\n"
    );
    let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("keywords.rs");
    std::fs::write(out, code).unwrap();
}
