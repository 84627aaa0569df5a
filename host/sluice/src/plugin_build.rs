//! `sluice plugin build [DIR] [-o OUT]`: builds a connector written with one of the SDKs into a
//! component, running the SDK's own build tool for the author:
//!
//! - Python (`DIR/app.py`): `sluice-py-build app.py -o OUT` of the `sluice-sdk` pip package, which
//!   runs componentize-py; found in `$VIRTUAL_ENV/bin`, `DIR/.venv/bin`, then `PATH`.
//! - JavaScript (`DIR/package.json`): `sluice-js-build ENTRY -o OUT` of the
//!   `sluice-connector-sdk` npm package (`DIR/node_modules/.bin`), which bundles with esbuild and
//!   runs componentize-js; ENTRY is the package's `main`, else `connector.js`.
//!
//! Rust connectors build with cargo (docs/sdk-rust.md has the recipe).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Arguments of `sluice plugin build`.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// The connector's directory (`app.py` for Python, `package.json` for JavaScript).
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
        bail!(
            "{}: a Rust connector builds with cargo (docs/sdk-rust.md)",
            dir.display()
        );
    }
    bail!(
        "{}: neither app.py (Python SDK) nor package.json (JavaScript SDK)",
        dir.display()
    )
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
