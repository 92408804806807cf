//! docs/api.md's method index is the declarations' (`model::api::docs_index`), so the document
//! cannot drift from what apid serves. `CAIRN_BLESS=1 cargo test -p model --test api_docs`
//! rewrites it after a declaration changed.

const BEGIN: &str =
    "<!-- BEGIN method index: generated from model::api, see model/tests/api_docs.rs -->\n";
const END: &str = "<!-- END method index -->";

#[test]
fn docs_method_index_matches_the_declarations() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("docs/api.md has no {BEGIN:?} marker"))
        + BEGIN.len();
    let end = start
        + doc[start..]
            .find(END)
            .unwrap_or_else(|| panic!("docs/api.md has no {END:?} marker"));
    let want = model::api::docs_index();
    if doc[start..end] != want {
        if std::env::var_os("CAIRN_BLESS").is_some() {
            let fixed = format!("{}{want}{}", &doc[..start], &doc[end..]);
            std::fs::write(&path, fixed).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            return;
        }
        panic!(
            "docs/api.md's method index differs from model::api's declarations; run \
             CAIRN_BLESS=1 cargo test -p model --test api_docs"
        );
    }
}
