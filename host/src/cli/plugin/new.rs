//! `replicator plugin new`: a plugin project that builds to a component out of the box. The
//! templates and the SDKs ship inside this binary (`sdk/` of the repository): the project
//! gets its language's SDK vendored in `sdk/` and the WIT in `wit/`, so it builds offline.

use anyhow::{Context, bail};
use include_dir::{Dir, DirEntry, include_dir};
use std::path::{Path, PathBuf};

static TEMPLATES: Dir = include_dir!("$CARGO_MANIFEST_DIR/../guest-examples/sdk/templates");
static SDK_RUST: Dir = include_dir!("$CARGO_MANIFEST_DIR/../guest-examples/sdk/rust");
static SDK_JS: Dir = include_dir!("$CARGO_MANIFEST_DIR/../guest-examples/sdk/js");
static SDK_PYTHON: Dir = include_dir!("$CARGO_MANIFEST_DIR/../guest-examples/sdk/python");
const WIT: &str = include_str!("../../../../wit/plugin.wit");

/// What a local checkout may hold that is not part of an SDK or template.
const NOT_SHIPPED: [&str; 5] = [
    "node_modules",
    ".venv",
    "__pycache__",
    "target",
    ".component-run",
];

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kind {
    Transform,
    Driver,
}

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }

    fn sdk(self) -> &'static Dir<'static> {
        match self {
            Lang::Rust => &SDK_RUST,
            Lang::Js => &SDK_JS,
            Lang::Python => &SDK_PYTHON,
        }
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Transform => "transform",
            Kind::Driver => "driver",
        }
    }
}

/// A name every language's package rules take: lowercase letters, digits and `-`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "\"{name}\" cannot name a plugin: use lowercase letters, digits and '-', starting with a letter (e.g. acme-mask)"
        );
    }
    Ok(())
}

/// The files of one embedded folder (recursively), without what a checkout leaves there.
fn files<'a>(dir: &'a Dir<'a>, out: &mut Vec<&'a include_dir::File<'a>>) {
    for entry in dir.entries() {
        let skipped = entry
            .path()
            .file_name()
            .is_some_and(|n| NOT_SHIPPED.iter().any(|s| n == *s));
        match entry {
            _ if skipped => {}
            DirEntry::Dir(d) => files(d, out),
            DirEntry::File(f) => out.push(f),
        }
    }
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    // Build scripts are run directly.
    if path.extension().is_some_and(|e| e == "sh") {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Writes the project `parent/name`; returns its path and the files written.
pub fn scaffold(
    name: &str,
    lang: Lang,
    kind: Kind,
    parent: &Path,
) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    check_name(name)?;
    let root = parent.join(name);
    if root.exists()
        && std::fs::read_dir(&root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", root.display());
    }
    // The language's files common to both kinds (build script, .gitignore), then the kind's.
    let folders = [
        lang.name().to_string(),
        format!("{}-{}", lang.name(), kind.name()),
    ];
    let snake = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{snake_name}}", &snake)
    };
    let mut written = Vec::new();
    for folder in &folders {
        let template = TEMPLATES
            .get_dir(folder)
            .with_context(|| format!("this binary carries no {folder} template"))?;
        let mut template_files = Vec::new();
        files(template, &mut template_files);
        for f in template_files {
            let relative = f.path().strip_prefix(folder).unwrap_or(f.path());
            let path = root.join(fill(&relative.to_string_lossy()));
            match f.contents_utf8() {
                Some(text) => write(&path, fill(text).as_bytes())?,
                None => write(&path, f.contents())?,
            }
            written.push(path);
        }
    }
    let mut sdk_files = Vec::new();
    files(lang.sdk(), &mut sdk_files);
    for f in sdk_files {
        let path = root.join("sdk").join(f.path());
        write(&path, f.contents())?;
        written.push(path);
    }
    let wit = root.join("wit/plugin.wit");
    write(&wit, WIT.as_bytes())?;
    written.push(wit);
    Ok((root, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("acme-mask").is_ok());
        assert!(check_name("a1").is_ok());
        for bad in ["", "Acme", "1a", "a_b", "a-", "a b", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_language_and_kind_has_a_template_and_an_sdk() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            for kind in [Kind::Transform, Kind::Driver] {
                let dir = tempfile::tempdir().unwrap();
                let (root, written) = scaffold("acme-demo", lang, kind, dir.path()).unwrap();
                assert!(root.join("build.sh").exists(), "{lang:?} {kind:?}");
                assert!(root.join("cases.json").exists(), "{lang:?} {kind:?}");
                assert!(root.join("wit/plugin.wit").exists());
                assert!(written.iter().any(|p| p.starts_with(root.join("sdk"))));
                for p in &written {
                    let text = std::fs::read_to_string(p).unwrap_or_default();
                    assert!(
                        !text.contains("{{name}}") && !text.contains("{{snake_name}}"),
                        "{}",
                        p.display()
                    );
                }
                // A second time into the same place is refused.
                assert!(scaffold("acme-demo", lang, kind, dir.path()).is_err());
            }
        }
    }
}
