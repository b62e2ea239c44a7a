//! The build script of every Lambda function (each Cargo.toml names this file), for Linux:
//!
//! - links the function as a position-dependent executable. A position-independent one
//!   carries a dynamic relocation for every pointer in its read-only data (vtables, string
//!   tables: about 60,000 in the control API, 1.4 MB of `.rela.dyn`), which the loader
//!   applies at every cold start; linked at a fixed address, those are resolved once, by the
//!   linker. What it costs: the executable itself is not placed at a random address (its
//!   libraries, stack and heap still are); each function runs alone in its own microVM.
//! - when built for size (`opt-level = "z"`: the `function` profile and `infra/sam-build`,
//!   both of which also abort on panic), drops the unwinding tables (`.eh_frame`, 1.1 MB
//!   of the control API; `lambda-unwind.ld`): nothing unwinds in such a binary. A panic
//!   still prints its message and ends the process; what it loses is the stack trace
//!   `RUST_BACKTRACE` would add. Builds that unwind (tests, debugging) keep them. (Cargo
//!   does not tell a build script the profile's panic strategy: `CARGO_CFG_PANIC` is the
//!   target's default.)
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        return;
    }
    println!("cargo::rustc-link-arg-bins=-no-pie");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let script = std::path::Path::new(&dir).join("../lambda-unwind.ld");
    println!("cargo::rerun-if-changed={}", script.display());
    if std::env::var("OPT_LEVEL").as_deref() == Ok("z") {
        println!("cargo::rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}
