//! `edgeprio doctor`: the runner around [`crate::doctor`], printing each
//! finding as it is made and a count at the end.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::DoctorArgs;

/// Runs the checks against the configuration at `config_path`; fails when
/// any check does.
pub fn run(config_path: &Path, args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    println!("edgeprio doctor: {}", config_path.display());
    let findings = crate::doctor::run(config_path, args.reads, |f| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(f.render().as_bytes());
        let _ = out.flush();
    });
    let failed = findings
        .iter()
        .filter(|f| f.level == crate::doctor::Level::Fail)
        .count();
    if failed == 0 {
        println!("no problems found");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failed} problem(s) found");
        Ok(ExitCode::FAILURE)
    }
}
