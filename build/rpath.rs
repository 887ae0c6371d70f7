//! Embeds an rpath to libtorch so binaries and tests of every crate that links tch (the root
//! package, `stages`, `pipeline`) run without `LD_LIBRARY_PATH`. Shared by their manifests.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        // Resolve the .libtorch link so the rpath names the install itself, not the checkout.
        let libtorch = std::fs::canonicalize(&libtorch).unwrap_or_else(|_| libtorch.into());
        println!(
            "cargo:rustc-link-arg=-Wl,-rpath,{}",
            libtorch.join("lib").display()
        );
    }
}
