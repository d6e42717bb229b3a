//! Builds the dashboard (`site/` at the repository root) with npm and Vite into `OUT_DIR`
//! and generates `site_files.rs`, which embeds every built file with its content type.
//!
//! `npm ci` runs only when `site/node_modules` is missing or older than the lockfile;
//! Vite writes only into `OUT_DIR`, never into the source tree. Cargo re-runs this
//! script only when the site's sources or lockfile change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the site's build reads; a change to any of these rebuilds it.
const SOURCES: &[&str] = &[
    "package.json",
    "package-lock.json",
    "index.html",
    "vite.config.ts",
    "tsconfig.json",
    "src",
    "public",
];

fn main() {
    if let Err(message) = build() {
        println!("cargo::error={message}");
    }
}

fn build() -> Result<(), String> {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let site = manifest.join("..").join("..").join("site");
    let out = PathBuf::from(env("OUT_DIR")?);
    for s in SOURCES {
        println!("cargo::rerun-if-changed={}", site.join(s).display());
    }

    match Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        _ => {
            return Err(
                "building the dashboard needs Node.js (18 or later) and npm; install them: apt-get install nodejs npm"
                    .into(),
            );
        }
    }

    if needs_install(&site) {
        npm(&site, &["ci", "--no-audit", "--no-fund"])?;
    }
    let dist = out.join("site");
    let dist_arg = dist.to_str().ok_or("OUT_DIR is not valid UTF-8")?;
    npm(
        &site,
        &["run", "build", "--", "--outDir", dist_arg, "--emptyOutDir"],
    )?;

    let mut files = Vec::new();
    collect(&dist, &dist, &mut files)?;
    files.sort();
    if !files.iter().any(|(rel, _)| rel == "index.html") {
        return Err(format!(
            "the dashboard build wrote no index.html into {}",
            dist.display()
        ));
    }
    let mut code = String::from(
        "/// Every file of the built dashboard.\npub static FILES: &[SiteFile] = &[\n",
    );
    for (rel, abs) in &files {
        let _ = writeln!(
            code,
            "    SiteFile {{ path: {rel:?}, content_type: {:?}, body: include_bytes!({:?}) }},",
            content_type(rel),
            abs.display().to_string(),
        );
    }
    code.push_str("];\n");
    std::fs::write(out.join("site_files.rs"), code)
        .map_err(|e| format!("could not write site_files.rs: {e}"))
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (run through cargo)"))
}

/// Whether `npm ci` must run: no installed tree, or one older than the lockfile.
fn needs_install(site: &Path) -> bool {
    let mtime = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        mtime(site.join("node_modules").join(".package-lock.json")),
        mtime(site.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    }
}

/// Runs npm in `site`; its output goes to stderr, which cargo shows when the build fails
/// (stdout is reserved for cargo's directives).
fn npm(site: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new("npm")
        .args(args)
        .current_dir(site)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| format!("could not run npm: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`npm {}` in {} failed ({status}); its output is above",
            args.join(" "),
            site.display()
        ))
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("could not read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("could not read {}: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            collect(root, &path, files)?;
        } else {
            let rel = path
                .strip_prefix(root)
                .map_err(|e| e.to_string())?
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.push((rel, path));
        }
    }
    Ok(())
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}
