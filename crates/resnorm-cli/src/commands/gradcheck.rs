//! `resnorm gradcheck`: runs every finite-difference check of the library and prints a table;
//! exit code 1 when any check fails.

use resnorm::gradcheck::{all_checks, CheckResult};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object per check instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> resnorm::Result<ExitCode> {
    let results = all_checks();
    if args.json {
        for r in &results {
            let line = serde_json::json!({
                "check": r.name, "max_abs_err": r.max_abs_err, "max_rel_err": r.max_rel_err,
                "tolerance": r.tolerance, "passed": r.passed,
            });
            println!("{line}");
        }
    } else {
        print_table(&results);
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_table(results: &[CheckResult]) {
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<width$}  {:>12}  {:>12}  {:>9}  result",
        "check", "max abs err", "max rel err", "tolerance"
    );
    for r in results {
        let verdict = if r.passed { "PASS" } else { "FAIL" };
        println!(
            "{:<width$}  {:>12.3e}  {:>12.3e}  {:>9.0e}  {verdict}",
            r.name, r.max_abs_err, r.max_rel_err, r.tolerance
        );
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    println!(
        "{} checks, {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    );
}
