#[test]
fn committed_schema_graphql_matches_what_the_code_exports() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql exists at the repository root");

    let exported = octp_backend::graphql::sdl();

    assert!(
        committed == exported,
        "schema.graphql is out of date: run `cargo run -- export-schema --output schema.graphql` and commit it.\n--- exported ---\n{exported}"
    );
}
