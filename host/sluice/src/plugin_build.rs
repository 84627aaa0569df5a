//! `sluice plugin build [DIR] [-o OUT]`: builds a connector written with one of the SDKs into a
//! component, running the SDK's own build tool for the author:
//!
//! - Python (`DIR/app.py`): `sluice-py-build app.py -o OUT` of the `sluice-sdk` pip package, which
//!   runs componentize-py; found in `$VIRTUAL_ENV/bin`, `DIR/.venv/bin`, then `PATH`.
//! - JavaScript (`DIR/package.json`): `sluice-js-build ENTRY -o OUT` of the
//!   `sluice-connector-sdk` npm package (`DIR/node_modules/.bin`), which bundles with esbuild and
//!   runs componentize-js; ENTRY is the package's `main`, else `connector.js`.
//!
//! - Rust (`DIR/Cargo.toml`): `cargo build --release` in DIR with the caller's toolchain
//!   (docs/sdk-rust.md: the crate's `.cargo/config.toml` picks wasm32 and build-std; on this
//!   machine kind `. "$RUSTWEB/env.sh"` first), then the crate's cdylib `.wasm`, as cargo reports
//!   it, copied to OUT. With `RUSTWEB` set and no linker chosen, the linker is its
//!   `wasm-component-ld` (the output is then a component).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Arguments of `sluice plugin build`.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// The connector's directory (`app.py` for Python, `package.json` for JavaScript,
    /// `Cargo.toml` for Rust).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The component to write; default `DIR/<directory name>.wasm`.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

/// Which SDK a directory uses, and the tool and arguments that build it.
#[derive(Debug, PartialEq)]
enum Plan {
    Python { tool: PathBuf },
    JavaScript { tool: PathBuf, entry: String },
    Rust,
}

/// Builds the connector in `args.dir`; fails with the tool's exit status.
pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("{}: no such directory", args.dir.display()))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("connector")
        .to_string();
    let out = match args.out {
        Some(o) if o.is_absolute() => o,
        Some(o) => std::env::current_dir()?.join(o),
        None => dir.join(format!("{name}.wasm")),
    };
    let (mut cmd, what) = match plan(&dir)? {
        Plan::Rust => return build_rust(&dir, &out),
        Plan::Python { tool } => {
            let mut c = Command::new(&tool);
            c.arg("app.py");
            (c, format!("{} (componentize-py)", tool.display()))
        }
        Plan::JavaScript { tool, entry } => {
            let mut c = Command::new(&tool);
            c.arg(entry);
            (c, format!("{} (componentize-js)", tool.display()))
        }
    };
    cmd.arg("-o").arg(&out).current_dir(&dir);
    eprintln!("building {} with {what}", dir.display());
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn plan(dir: &Path) -> anyhow::Result<Plan> {
    if dir.join("app.py").is_file() {
        let venvs = [
            std::env::var_os("VIRTUAL_ENV").map(PathBuf::from),
            Some(dir.join(".venv")),
        ];
        let tool = venvs
            .into_iter()
            .flatten()
            .map(|v| v.join("bin/sluice-py-build"))
            .find(|t| t.is_file())
            .or_else(|| on_path("sluice-py-build"))
            .context(
                "sluice-py-build not found: pip install the Python SDK (sdk/python) into the active \
                 venv or DIR/.venv (docs/sdk-python.md)",
            )?;
        return Ok(Plan::Python { tool });
    }
    if dir.join("package.json").is_file() {
        let tool = dir.join("node_modules/.bin/sluice-js-build");
        if !tool.exists() {
            bail!(
                "{} is missing: npm install the JavaScript SDK (sdk/js, sluice-connector-sdk) in {} \
                 (docs/sdk-js.md)",
                tool.display(),
                dir.display()
            );
        }
        let package: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("package.json")).context("reading package.json")?,
        )
        .context("package.json is not JSON")?;
        let entry = package["main"]
            .as_str()
            .unwrap_or("connector.js")
            .to_string();
        return Ok(Plan::JavaScript { tool, entry });
    }
    if dir.join("Cargo.toml").is_file() {
        return Ok(Plan::Rust);
    }
    bail!(
        "{}: neither app.py (Python SDK), package.json (JavaScript SDK) nor Cargo.toml (Rust SDK)",
        dir.display()
    )
}

/// The linker variable cargo reads for the wasm target.
const WASM_LINKER_VAR: &str = "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER";

/// `cargo build --release` in `dir`, then the root crate's cdylib `.wasm` (from cargo's JSON
/// messages, so `CARGO_TARGET_DIR` and `.cargo/config.toml` are honoured) copied to `out`.
fn build_rust(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args([
        "build",
        "--release",
        "--message-format=json-render-diagnostics",
    ])
    .current_dir(dir)
    .stdout(std::process::Stdio::piped());
    if std::env::var_os(WASM_LINKER_VAR).is_none()
        && let Some(rustweb) = std::env::var_os("RUSTWEB")
    {
        let linker = PathBuf::from(rustweb)
            .join("usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld");
        if linker.is_file() {
            cmd.env(WASM_LINKER_VAR, linker);
        }
    }
    eprintln!("building {} with cargo build --release", dir.display());
    let output = cmd.output().context("running cargo (is it on PATH?)")?;
    if !output.status.success() {
        bail!(
            "cargo build failed ({}); the wasm32 toolchain recipe is in docs/sdk-rust.md",
            output.status
        );
    }
    let wasm = cdylib_wasm(&String::from_utf8_lossy(&output.stdout)).context(
        "cargo built no .wasm cdylib: the crate needs crate-type = [\"cdylib\"] and the \
         wasm32-unknown-unknown target (.cargo/config.toml, docs/sdk-rust.md)",
    )?;
    std::fs::copy(&wasm, out)
        .with_context(|| format!("copying {} to {}", wasm.display(), out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// The last `.wasm` file of a cdylib target in cargo's JSON messages (the root crate is built
/// last; dependencies are rlibs).
fn cdylib_wasm(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .filter(|f| f.extension().is_some_and(|e| e == "wasm"))
                .collect::<Vec<_>>()
        })
        .last()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_sdk_by_the_files_present() {
        let root = std::env::temp_dir().join(format!("sluice-plugin-build-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let dir = Dir(root);
        let err = plan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("neither app.py"), "{err}");
        std::fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        assert_eq!(plan(dir.path()).unwrap(), Plan::Rust);
        std::fs::remove_file(dir.path().join("Cargo.toml")).unwrap();

        std::fs::write(dir.path().join("package.json"), r#"{"main": "src/c.js"}"#).unwrap();
        let err = plan(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("node_modules/.bin/sluice-js-build is missing"),
            "{err}"
        );
        let bin = dir.path().join("node_modules/.bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("sluice-js-build"), "").unwrap();
        assert_eq!(
            plan(dir.path()).unwrap(),
            Plan::JavaScript {
                tool: bin.join("sluice-js-build"),
                entry: "src/c.js".into()
            }
        );

        std::fs::write(dir.path().join("app.py"), "").unwrap();
        let venv = dir.path().join(".venv/bin");
        std::fs::create_dir_all(&venv).unwrap();
        std::fs::write(venv.join("sluice-py-build"), "").unwrap();
        // The caller's VIRTUAL_ENV, if it has one, comes first; DIR/.venv's otherwise.
        match plan(dir.path()).unwrap() {
            Plan::Python { tool } => assert!(tool.ends_with("bin/sluice-py-build"), "{tool:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_cdylib_wasm_is_read_from_cargos_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"kind":["lib"]},"filenames":["/t/libserde.rlib"]}
not json
{"reason":"compiler-artifact","target":{"kind":["cdylib"]},"filenames":["/t/wasm32-unknown-unknown/release/my_api.wasm"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            cdylib_wasm(messages),
            Some(PathBuf::from(
                "/t/wasm32-unknown-unknown/release/my_api.wasm"
            ))
        );
        assert_eq!(cdylib_wasm(r#"{"reason":"build-finished"}"#), None);
    }

    /// A scratch directory removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
