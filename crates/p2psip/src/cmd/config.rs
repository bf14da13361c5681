//! `p2psip config check FILE`: validate a config file the way the services read it and show
//! the configuration each section's subcommand would run with, and where every value comes
//! from (the file, a `P2PSIP_*` variable, or the built-in default).

use crate::config_file::{self, Origin};
use anyhow::Context;
use clap::builder::Command;
use clap::parser::ValueSource;
use std::path::PathBuf;

/// Options for `p2psip config`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// Check FILE: every section names a subcommand (`[peer]`, `[stun-server]`,
    /// `[sos]`, `[sos.rank]`), every key one of its long options with a value its flag accepts;
    /// print the effective configuration of each section. Exit status 1 on the first error.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

pub(crate) fn run(a: Args, root: Command) -> anyhow::Result<()> {
    let What::Check { file } = a.what;
    let table = config_file::read(&file)?;
    let mut sections = Vec::new();
    sections_of(&table, &root, &mut Vec::new(), &mut sections)
        .with_context(|| format!("{}", file.display()))?;
    if sections.is_empty() {
        anyhow::bail!("{}: no section names a subcommand", file.display());
    }
    for path in sections {
        let mut argv: Vec<std::ffi::OsString> = vec!["p2psip".into()];
        argv.extend(path.iter().map(Into::into));
        argv.push("--config".into());
        argv.push(file.clone().into());
        let (argv, origins) = config_file::apply(&root, argv)?;
        let matches = root.clone().try_get_matches_from(argv).map_err(|e| {
            let text = e.render().to_string();
            let text = text.trim_start_matches("error: ").trim_end();
            anyhow::anyhow!("{}: [{}]: {text}", file.display(), path.join("."))
        })?;
        let (_, cmd, m) = config_file::leaf_of(&root, &matches);
        service::say!("[{}]", path.join("."));
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_positional() || matches!(id, "help" | "version") {
                continue;
            }
            let origin = match (origins.get(id), m.value_source(id)) {
                (Some(Origin::File), _) => "file",
                (Some(Origin::Env), _) => "environment",
                (None, Some(ValueSource::DefaultValue)) => "default",
                (None, Some(ValueSource::EnvVariable)) => "environment",
                (None, Some(_)) => "command line",
                (None, None) => continue,
            };
            let value = match m.get_raw(id) {
                Some(vals) => vals
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(","),
                None => continue,
            };
            service::say!("{id} = {value:?}  # {origin}");
        }
    }
    Ok(())
}

/// The subcommand paths `table`'s sections name (a section may hold its subcommand's own
/// options and the sections of its subcommands).
fn sections_of(
    table: &toml::Table,
    cmd: &Command,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> anyhow::Result<()> {
    let mut own = false;
    for (key, v) in table {
        match v {
            toml::Value::Table(sub) => {
                let Some(c) = cmd.find_subcommand(key) else {
                    if path.is_empty() {
                        anyhow::bail!("[{key}] is not a p2psip subcommand");
                    }
                    anyhow::bail!(
                        "[{}.{key}] is not a subcommand of {}",
                        path.join("."),
                        path.join(" ")
                    );
                };
                path.push(key.clone());
                sections_of(sub, c, path, out)?;
                path.pop();
            }
            _ if path.is_empty() => {
                anyhow::bail!("`{key}` is outside any section: put it under [peer], [sos], …")
            }
            _ => own = true,
        }
    }
    if own || (!path.is_empty() && table.is_empty()) {
        out.push(path.clone());
    }
    Ok(())
}
