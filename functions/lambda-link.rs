//! The build script of every Lambda function (each Cargo.toml names this file): links the
//! function as a position-dependent executable on Linux. A position-independent one
//! carries a dynamic relocation for every pointer in its read-only data (vtables, string
//! tables: about 60,000 in the control API, 1.4 MB of `.rela.dyn`), which the loader
//! applies at every cold start; linked at a fixed address, those are resolved once, by the
//! linker. What it costs: the executable itself is not placed at a random address (its
//! libraries, stack and heap still are); each function runs alone in its own microVM.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") {
        println!("cargo::rustc-link-arg-bins=-no-pie");
    }
}
