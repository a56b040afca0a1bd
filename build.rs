//! Stamps the binary with the git commit it was built from (`tally_build_info{git_sha}`):
//! `TALLY_GIT_SHA` when set (container builds have no `.git`), else `git rev-parse`, else
//! `unknown`.

fn main() {
    println!("cargo:rerun-if-env-changed=TALLY_GIT_SHA");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let sha = std::env::var("TALLY_GIT_SHA")
        .ok()
        .filter(|sha| !sha.is_empty())
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|out| out.status.success())
                .and_then(|out| String::from_utf8(out.stdout).ok())
                .map(|sha| sha.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=TALLY_GIT_SHA={sha}");
}
