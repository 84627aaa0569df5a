//! `sluice plugin new <ID> --lang rust|python|js [--dir PATH] [--sdk PATH]`: writes a connector
//! skeleton that builds and passes `sluice plugin test` unchanged.
//!
//! The files are templates embedded in the binary (`host/sluice/templates/{common,rust,python,js}`)
//! with `{{id}}`-style placeholders replaced: `{{id}}` (the manifest id), `{{crate}}` (the Rust
//! library name), `{{sdk}}` (where the build finds the SDK), `{{build}}` (the README's build
//! section, from the language's `BUILD.md`), `{{wasm}}`, `{{source}}`, `{{lang}}`, `{{lang_flag}}`.
//!
//! The SDK: the skeleton's build file points at an SDK directory by absolute path (Cargo path
//! dependency, pip `file://` requirement, npm `file:` dependency). `--sdk PATH` chooses it; by
//! default it is the SDK in the source tree this binary was built from (`plugins/sdk`,
//! `sdk/python`, `sdk/js`) when that tree is still there.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Arguments of `sluice plugin new`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub struct NewArgs {
    /// The connector's id (its manifest id): `[a-z][a-z0-9-]*`, at most 64 characters.
    pub id: String,
    /// The SDK's language.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to write the skeleton (created; must not exist or be empty). Default: `./<ID>`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The SDK directory the skeleton's build file points at: the `sluice-sdk` crate (Rust), the
    /// `sluice-sdk` pip package (Python) or the `sluice-connector-sdk` npm package (JavaScript).
    /// Default: `plugins/sdk`, `sdk/python` or `sdk/js` of the source tree this binary was built
    /// from, when it is still there.
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
The skeleton: the connector source (manifest with config `base_url` and secret `api_key`, sent by
the host as the x-api-key header; validate = GET {base_url}/me; stream `items`, primary key `id`,
cursor `updated_at`, incremental with ?since= from the committed state), its build file,
test/config.json, test/cassette/cassette.jsonl (the API's recorded answers, so the test runs
offline) and a README with these commands.

Start a connector, then build and test it (in the new directory: cd my-api):
  sluice plugin new my-api --lang python
    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
    sluice plugin build . -o my-api.wasm
  sluice plugin new my-api --lang js
    npm install && sluice plugin build . -o my-api.wasm
  sluice plugin new my-api --lang rust
    sluice plugin build . -o my-api.wasm   (cargo build --release; the wasm32 toolchain:
                                            the skeleton's README, docs/sdk-rust.md)
  sluice plugin test my-api.wasm --config test/config.json --secret api_key=any-value-12345 \\
    --cassette test/cassette
Re-record against the real API: set base_url in test/config.json, then add --record and pass the
real key (--secret api_key=$API_KEY).";

/// The SDK languages a skeleton can be written in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// One template file: its path in the skeleton and its text.
type File = (&'static str, &'static str);

const COMMON: &[File] = &[
    ("README.md", include_str!("../templates/common/README.md")),
    (
        "test/config.json",
        include_str!("../templates/common/test/config.json"),
    ),
    (
        "test/cassette/cassette.jsonl",
        include_str!("../templates/common/test/cassette/cassette.jsonl"),
    ),
];

const RUST: &[File] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    (
        ".cargo/config.toml",
        include_str!("../templates/rust/.cargo/config.toml"),
    ),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    (".gitignore", include_str!("../templates/rust/gitignore")),
];

const PYTHON: &[File] = &[
    ("app.py", include_str!("../templates/python/app.py")),
    (
        "requirements.txt",
        include_str!("../templates/python/requirements.txt"),
    ),
    (".gitignore", include_str!("../templates/python/gitignore")),
];

const JS: &[File] = &[
    ("connector.js", include_str!("../templates/js/connector.js")),
    ("package.json", include_str!("../templates/js/package.json")),
    (".gitignore", include_str!("../templates/js/gitignore")),
];

impl Lang {
    fn files(self) -> &'static [File] {
        match self {
            Lang::Rust => RUST,
            Lang::Python => PYTHON,
            Lang::Js => JS,
        }
    }

    fn build_section(self) -> &'static str {
        match self {
            Lang::Rust => include_str!("../templates/rust/BUILD.md"),
            Lang::Python => include_str!("../templates/python/BUILD.md"),
            Lang::Js => include_str!("../templates/js/BUILD.md"),
        }
    }

    /// (name in prose, `--lang` value, source file, SDK dir in the source tree, a file that
    /// shows a directory is that SDK)
    fn facts(
        self,
    ) -> (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ) {
        match self {
            Lang::Rust => ("Rust", "rust", "src/lib.rs", "plugins/sdk", "Cargo.toml"),
            Lang::Python => ("Python", "python", "app.py", "sdk/python", "pyproject.toml"),
            Lang::Js => ("JavaScript", "js", "connector.js", "sdk/js", "package.json"),
        }
    }
}

/// Whether `id` is a manifest id: `[a-z][a-z0-9-]*`, 1 to 64 characters.
fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The SDK directory: `--sdk`, else the one in the source tree this binary was built from.
fn sdk_dir(lang: Lang, given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (name, flag, _, in_tree, marker) = lang.facts();
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(in_tree),
    };
    if !dir.join(marker).is_file() {
        bail!(
            "{}: not the {name} SDK (no {marker}); pass --sdk PATH to the {name} SDK's directory \
             ({in_tree} in a Sluice checkout), e.g. sluice plugin new ID --lang {flag} --sdk \
             path/to/sluice/{in_tree}",
            dir.display()
        );
    }
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// The skeleton's files with every placeholder replaced.
fn render(id: &str, lang: Lang, sdk: &Path) -> Vec<(&'static str, String)> {
    let (name, flag, source, _, _) = lang.facts();
    let crate_name = id.replace('-', "_");
    let wasm = format!("{id}.wasm");
    let sdk = sdk.to_string_lossy();
    // Inside a quoted string of package.json or Cargo.toml: `"` and `\` escaped (JSON and TOML
    // basic strings escape them alike).
    let sdk_quoted = serde_json::to_string(&sdk).unwrap_or_default();
    let sdk_quoted = sdk_quoted.trim_matches('"').to_string();
    COMMON
        .iter()
        .chain(lang.files())
        .map(|(path, text)| {
            let sdk = if path.ends_with(".json") || path.ends_with(".toml") {
                sdk_quoted.as_str()
            } else {
                &sdk
            };
            let text = text
                .replace("{{build}}", lang.build_section().trim_end())
                .replace("{{id}}", id)
                .replace("{{crate}}", &crate_name)
                .replace("{{sdk}}", sdk)
                .replace("{{wasm}}", &wasm)
                .replace("{{source}}", source)
                .replace("{{lang}}", name)
                .replace("{{lang_flag}}", flag);
            (*path, text)
        })
        .collect()
}

/// Writes the skeleton; refuses a bad id and an existing non-empty directory.
pub fn run(args: NewArgs) -> anyhow::Result<()> {
    if !valid_id(&args.id) {
        bail!(
            "{:?} is not a connector id: lowercase letters, digits and '-', starting with a \
             letter, at most 64 characters (e.g. my-api)",
            args.id
        );
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.id));
    if dir.exists() {
        let mut entries = std::fs::read_dir(&dir)
            .with_context(|| format!("{} is not a directory", dir.display()))?;
        if entries.next().is_some() {
            bail!("{} exists and is not empty", dir.display());
        }
    }
    let sdk = sdk_dir(args.lang, args.sdk.as_deref())?;
    for (path, text) in render(&args.id, args.lang, &sdk) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    let (name, ..) = args.lang.facts();
    println!(
        "wrote the {name} connector {} into {} (SDK: {}); its README.md has the build and test \
         commands",
        args.id,
        dir.display(),
        sdk.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_manifest_rule() {
        for ok in ["a", "my-api", "x2-y3"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in [
            "",
            "My-api",
            "2api",
            "-api",
            "my_api",
            "my api",
            &"a".repeat(65),
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn every_placeholder_is_replaced() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let files = render("my-api", lang, Path::new("/the/sdk"));
            for (path, text) in &files {
                assert!(!text.contains("{{"), "{lang:?} {path}: {text}");
            }
            let (_, _, source, _, _) = lang.facts();
            let text = |name: &str| {
                files
                    .iter()
                    .find(|(p, _)| *p == name)
                    .map(|(_, t)| t.clone())
                    .unwrap_or_default()
            };
            assert!(text(source).contains("\"my-api\"") || text(source).contains("'my-api'"));
            assert!(text("README.md").contains("my-api.wasm"));
            let build_file = match lang {
                Lang::Rust => "Cargo.toml",
                Lang::Python => "requirements.txt",
                Lang::Js => "package.json",
            };
            assert!(text(build_file).contains("/the/sdk"), "{lang:?}");
        }
    }

    #[test]
    fn an_sdk_path_with_quotes_stays_valid_json() {
        let files = render("my-api", Lang::Js, Path::new(r#"/odd "dir"\sdk"#));
        let package = files
            .iter()
            .find(|(p, _)| *p == "package.json")
            .map(|(_, t)| t.as_str())
            .unwrap_or_default();
        let package: serde_json::Value = serde_json::from_str(package).unwrap();
        assert_eq!(
            package["dependencies"]["sluice-connector-sdk"],
            r#"file:/odd "dir"\sdk"#
        );
    }
}
