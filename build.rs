// The SQL migrations are embedded at compile time: a new or changed script rebuilds.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
