fn main() {
    let path = std::env::args().nth(1).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut map = cdp_grammar::SourceMap::new();
    let id = map.add(&path, text.clone());
    let parsed = cdp_grammar::parse_file(id, &text);
    for d in &parsed.file.definitions {
        println!("{} {}", d.kind.keyword(), d.name.name);
    }
    if std::env::args().nth(2).is_some() {
        println!("{:#?}", parsed.file.definitions);
    }
    for d in &parsed.diagnostics {
        print!("{}", cdp_grammar::diag::render(&map, d));
    }
    println!("comments: {}", parsed.file.comments.len());
}
