//! Options from a TOML file (`--config FILE`) and from `P2PSIP_*` environment variables, for
//! every subcommand: each section of the file names a subcommand (`[peer]`,
//! `[stun-server]`, `[sos]`) and holds its long options as keys (`stabilize_ms` or
//! `stabilize-ms`). What the command line says wins, then the environment
//! (`P2PSIP_STABILIZE_MS`), then the file, then the built-in default. The file's values go
//! through the same parsers as the flags, so a bad value is refused as the flag would be.

use clap::ArgMatches;
use clap::builder::Command;
use clap::parser::ValueSource;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A config file larger than this is refused (a config is a few hundred bytes).
const MAX_FILE: u64 = 1 << 20;

/// Where an option's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    File,
    Env,
}

/// The command line with the file's and the environment's options added for the
/// subcommand it runs (unchanged without `--config` and `P2PSIP_*` variables), and where
/// each added option came from.
pub(crate) fn apply(
    root: &Command,
    argv: Vec<OsString>,
) -> anyhow::Result<(Vec<OsString>, BTreeMap<String, Origin>)> {
    let file = config_path(&argv);
    let env: BTreeMap<String, OsString> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
        .filter(|(k, _)| k.starts_with("P2PSIP_"))
        .collect();
    if file.is_none() && env.is_empty() {
        return Ok((argv, BTreeMap::new()));
    }
    // What the command line alone says (missing required options may come from the file).
    let Ok(matches) = root.clone().ignore_errors(true).try_get_matches_from(&argv) else {
        return Ok((argv, BTreeMap::new()));
    };
    let (path, leaf, leaf_matches) = leaf_of(root, &matches);
    if path.is_empty() {
        return Ok((argv, BTreeMap::new()));
    }
    let table = match &file {
        Some(f) => section(f, &path)?,
        None => toml::Table::new(),
    };
    let mut argv = argv;
    let mut origins = BTreeMap::new();
    let mut known = Vec::new();
    for arg in leaf.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if arg.is_positional() || matches!(id, "help" | "version" | "config") {
            continue;
        }
        // A key may be the option's long name (as documented) or its argument id, which
        // differ for repeatable options such as the STUN server's `--user` (id `users`).
        known.push(id.to_owned());
        known.push(long.replace('-', "_"));
        let source = leaf_matches.value_source(id);
        if matches!(
            source,
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let var = format!("P2PSIP_{}", id.to_ascii_uppercase());
        let flag = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        if let Some(v) = env.get(&var) {
            let v = v
                .to_str()
                .ok_or_else(|| anyhow::anyhow!("environment variable {var}: not UTF-8"))?;
            if flag {
                match v {
                    "1" | "true" | "yes" => argv.push(format!("--{long}").into()),
                    "0" | "false" | "no" | "" => {}
                    other => {
                        anyhow::bail!("environment variable {var}: {other:?} is not true or false")
                    }
                }
            } else if many {
                for part in v.split(',').filter(|p| !p.is_empty()) {
                    argv.push(format!("--{long}={part}").into());
                }
            } else {
                argv.push(format!("--{long}={v}").into());
            }
            origins.insert(id.to_owned(), Origin::Env);
            continue;
        }
        let key = [id.to_owned(), long.to_owned()]
            .into_iter()
            .find(|k| table.contains_key(k));
        let Some(key) = key else { continue };
        let shown = file
            .as_deref()
            .unwrap_or(Path::new(""))
            .display()
            .to_string();
        let bad =
            |what: String| anyhow::anyhow!("{shown}: [{}] key `{key}`: {what}", path.join("."));
        match (&table[&key], flag, many) {
            (toml::Value::Boolean(b), true, _) => {
                if *b {
                    argv.push(format!("--{long}").into());
                }
            }
            (v, true, _) => return Err(bad(format!("{v} is not true or false"))),
            (toml::Value::Array(items), false, true) => {
                for item in items {
                    argv.push(format!("--{long}={}", scalar(item).map_err(&bad)?).into());
                }
            }
            (toml::Value::Array(_), false, false) => {
                return Err(bad("takes one value, not a list".into()));
            }
            (v, false, _) => argv.push(format!("--{long}={}", scalar(v).map_err(&bad)?).into()),
        }
        origins.insert(id.to_owned(), Origin::File);
    }
    for key in table.keys() {
        let id = key.replace('-', "_");
        if !known.contains(&id) {
            anyhow::bail!(
                "{}: unknown key `{key}` in [{}] (`p2psip {} --help` lists the options)",
                file.as_deref().unwrap_or(Path::new("")).display(),
                path.join("."),
                path.join(" ")
            );
        }
    }
    Ok((argv, origins))
}

/// The file `--config FILE` (or `--config=FILE`) names, if any.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The subcommand `matches` run (its names from the root, its definition, its matches).
pub(crate) fn leaf_of<'a>(
    root: &'a Command,
    matches: &'a ArgMatches,
) -> (Vec<String>, &'a Command, &'a ArgMatches) {
    let (mut path, mut cmd, mut m) = (Vec::new(), root, matches);
    while let Some((name, sub)) = m.subcommand() {
        let Some(c) = cmd.find_subcommand(name) else {
            break;
        };
        path.push(name.to_owned());
        cmd = c;
        m = sub;
    }
    (path, cmd, m)
}

/// The section of `file` for the subcommand at `path` (empty when the file has none).
fn section(file: &Path, path: &[String]) -> anyhow::Result<toml::Table> {
    let all = read(file)?;
    let mut t = &all;
    for name in path {
        match t.get(name) {
            Some(toml::Value::Table(sub)) => t = sub,
            Some(_) => {
                anyhow::bail!("{}: `{name}` must be a section ([{name}])", file.display())
            }
            None => return Ok(toml::Table::new()),
        }
    }
    // Sections of deeper subcommands are not options of this one.
    Ok(t.iter()
        .filter(|(_, v)| !v.is_table())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

/// The whole file, parsed.
pub(crate) fn read(file: &Path) -> anyhow::Result<toml::Table> {
    use anyhow::Context;
    let reading = || format!("reading {}", file.display());
    let len = std::fs::metadata(file).with_context(reading)?.len();
    if len > MAX_FILE {
        anyhow::bail!("{} is larger than {MAX_FILE} bytes", file.display());
    }
    let text = std::fs::read_to_string(file).with_context(reading)?;
    text.parse::<toml::Table>()
        .with_context(|| format!("{} is not valid TOML", file.display()))
}

fn scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("{other} is not a string, number or boolean")),
    }
}
