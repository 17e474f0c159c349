//! The registry end to end: `cdp apply`, `cdp diff`, `cdp history` and `cdp rollback` on copies
//! of examples/retail, and applies killed with SIGKILL that must never lose an acknowledged
//! snapshot.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cdp_registry::Registry;

use crate::support::retail_copy;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cdp(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_cdp"))
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the cdp binary runs");
    Run {
        code: output.status.code().expect("cdp exits with a code"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read test file")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write test file");
}

/// Replaces the one occurrence of `from` in a file.
fn edit(path: &Path, from: &str, to: &str) {
    let text = read(path);
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} in {}",
        path.display()
    );
    write(path, &text.replacen(from, to, 1));
}

/// Times of day change from run to run; snapshots hold a placeholder of the same width.
fn without_times(text: &str) -> String {
    let shape = "dddd-dd-dd dd:dd:dd";
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let fits = chars.len() - i >= shape.len()
            && shape.chars().zip(&chars[i..]).all(|(s, &c)| match s {
                'd' => c.is_ascii_digit(),
                s => s == c,
            });
        if fits {
            out.push_str("YYYY-MM-DD hh:mm:ss");
            i += shape.len();
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `cdp history`'s rows: (version, hash prefix, snapshot).
fn history_rows(stdout: &str) -> Vec<(u32, String, u64)> {
    stdout
        .lines()
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (
                cells[0].parse().unwrap(),
                cells[1].to_string(),
                cells[2].parse().unwrap(),
            )
        })
        .collect()
}

const HIGH_VALUE_RULE: &str = "lifetime_value >= 500 or big_orders_30d >= 2";

#[test]
fn apply_diff_history_and_rollback_on_retail() {
    let (_tmp, dir) = retail_copy();
    let d = dir.to_str().unwrap();
    let segments = dir.join("segments.cdp");
    let original_segments = read(&segments);

    let none = cdp(&["history", "high_value", "--dir", d]);
    assert_eq!(none.code, 1, "{none}");
    assert!(
        none.stderr.contains("no registry in") && none.stderr.contains("`cdp apply` records"),
        "{none}"
    );

    // The first plan adds every definition that `cdp graph` lists, and writes nothing.
    let graph = cdp(&["graph", d]);
    let definitions = graph.stdout.lines().count();
    let diff = cdp(&["diff", d]);
    assert_eq!(diff.code, 0, "{diff}");
    assert!(
        diff.stdout
            .starts_with("the registry is empty; every definition is new:\n"),
        "{diff}"
    );
    assert!(
        diff.stdout.ends_with(&format!(
            "\nplan: {definitions} added, 0 changed, 0 removed\n"
        )),
        "{diff}"
    );
    assert_eq!(
        diff.stdout.lines().filter(|l| l.starts_with("+ ")).count(),
        definitions
    );
    assert!(!dir.join(".cdp/registry").exists());

    let first = cdp(&["apply", d, "--yes", "--author", "ada", "-m", "first"]);
    assert_eq!(first.code, 0, "{first}");
    assert!(
        first.stdout.ends_with(&format!(
            "\napplied snapshot 1: {definitions} added, 0 changed, 0 removed\n"
        )),
        "{first}"
    );
    let again = cdp(&["apply", d, "--yes", "--author", "ada"]);
    assert_eq!(
        (again.code, again.stdout.as_str()),
        (0, "no changes: the project is what snapshot 1 holds\n"),
        "{again}"
    );

    // A change of layout alone is no new version.
    edit(
        &segments,
        HIGH_VALUE_RULE,
        "lifetime_value>=500\n      or   big_orders_30d >= 2",
    );
    let relaid = cdp(&["diff", d]);
    assert_eq!(
        relaid.stdout, "no changes: the project is what snapshot 1 holds\n",
        "{relaid}"
    );

    // A rule changes, a feature comes, a segment goes.
    edit(
        &segments,
        "lifetime_value>=500\n      or   big_orders_30d >= 2",
        "lifetime_value >= 750 or big_orders_30d >= 2",
    );
    let bargain = original_segments
        .split("\n\n")
        .find(|block| block.starts_with("segment bargain_hunters"))
        .expect("retail has bargain_hunters")
        .to_string();
    edit(&segments, &format!("{bargain}\n\n"), "");
    let features = dir.join("features.cdp");
    write(
        &features,
        &format!(
            "{}\nfeature orders_7d of customer \"Completed orders this week\" = count(purchase) over 7d\n",
            read(&features)
        ),
    );
    let diff = cdp(&["diff", d]);
    assert_eq!(diff.code, 0, "{diff}");
    insta::assert_snapshot!("registry_diff", without_times(&diff.stdout));

    let second = cdp(&[
        "apply",
        d,
        "--yes",
        "--author",
        "bob",
        "-m",
        "raise the bar",
    ]);
    assert_eq!(second.code, 0, "{second}");
    assert_eq!(
        second.stdout.lines().last(),
        Some("applied snapshot 2: 1 added, 1 changed, 1 removed"),
        "{second}"
    );
    let history = cdp(&["history", "high_value", "--dir", d]);
    assert_eq!(history.code, 0, "{history}");
    insta::assert_snapshot!("registry_history", without_times(&history.stdout));

    // Rollback writes version 1's text back into segments.cdp and applies it as version 3.
    let rollback = cdp(&[
        "rollback",
        "high_value",
        "1",
        "--dir",
        d,
        "--author",
        "carol",
    ]);
    assert_eq!(rollback.code, 0, "{rollback}");
    insta::assert_snapshot!("registry_rollback", without_times(&rollback.stdout));
    let high_value_block = |text: &str| {
        text.split("\n\n")
            .find(|block| block.starts_with("segment high_value"))
            .map(str::to_string)
    };
    assert_eq!(
        high_value_block(&read(&segments)),
        high_value_block(&original_segments)
    );
    let history = cdp(&["history", "high_value", "--dir", d]);
    let rows = history_rows(&history.stdout);
    assert_eq!(
        rows.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>(),
        [(3, 3), (2, 2), (1, 1)],
        "{history}"
    );
    assert_eq!(rows[0].1, rows[2].1, "version 3 has version 1's content");
    assert_ne!(rows[1].1, rows[2].1);
    assert!(history
        .stdout
        .contains("carol   rollback high_value to version 1"));

    // A removed definition comes back at the end of the file it was in, as its old version.
    let back = cdp(&[
        "rollback",
        "bargain_hunters",
        "1",
        "--dir",
        d,
        "--author",
        "carol",
    ]);
    assert_eq!(back.code, 0, "{back}");
    assert!(
        back.stdout
            .contains("applied snapshot 4: 1 added, 0 changed, 0 removed\n"),
        "{back}"
    );
    assert!(read(&segments).ends_with(&format!("\n\n{bargain}\n")));
    assert_eq!(cdp(&["check", d]).code, 0);
    let history = cdp(&["history", "bargain_hunters", "--dir", d]);
    assert_eq!(history_rows(&history.stdout).len(), 1, "{history}");
    assert!(
        history
            .stdout
            .starts_with("segment bargain_hunters: 1 version, current: version 1\n"),
        "{history}"
    );
}

#[test]
fn what_would_not_check_is_refused_and_nothing_changes() {
    let (_tmp, dir) = retail_copy();
    let d = dir.to_str().unwrap();
    let segments = dir.join("segments.cdp");
    let features = dir.join("features.cdp");
    let apply = |message: &str| cdp(&["apply", d, "--yes", "--author", "ada", "-m", message]);

    // A segment reading a feature that a later snapshot removes.
    write(
        &features,
        &format!(
            "{}\nfeature basket_size of customer = avg(purchase.amount)\n",
            read(&features)
        ),
    );
    write(
        &segments,
        &format!(
            "{}\nsegment big_baskets of customer {{\n  basket_size > 80\n}}\n",
            read(&segments)
        ),
    );
    assert_eq!(apply("baskets").code, 0);
    edit(&segments, "basket_size > 80", "orders_total > 3");
    edit(
        &features,
        "\nfeature basket_size of customer = avg(purchase.amount)\n",
        "",
    );
    let second = apply("no more baskets");
    assert!(
        second
            .stdout
            .ends_with("applied snapshot 2: 0 added, 1 changed, 1 removed\n"),
        "{second}"
    );

    let before = read(&segments);
    let refused = cdp(&["rollback", "big_baskets", "1", "--dir", d]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("basket_size"), "{refused}");
    assert!(
        refused.stderr.contains(
            "error: not rolled back: with version 1 of `big_baskets` the project would have 1 error"
        ),
        "{refused}"
    );
    assert_eq!(read(&segments), before);

    let missing = cdp(&["rollback", "big_baskets", "7", "--dir", d]);
    assert_eq!(missing.code, 1, "{missing}");
    assert_eq!(
        missing.stderr,
        "error: `big_baskets` has no version 7; its versions are 1 to 2\n"
    );
    let misspelt = cdp(&["history", "big_basket", "--dir", d]);
    assert_eq!(misspelt.code, 1, "{misspelt}");
    assert_eq!(
        misspelt.stderr,
        "error: the registry has no definition `big_basket`; did you mean `big_baskets`?\n"
    );

    // A rollback does not take other unapplied changes along.
    edit(&segments, "lifetime_value >= 500", "lifetime_value >= 900");
    let pending = cdp(&["rollback", "big_baskets", "2", "--dir", d]);
    assert_eq!(pending.code, 1, "{pending}");
    assert!(
        pending
            .stderr
            .contains("the project has changes that are not applied (`high_value`)"),
        "{pending}"
    );

    // A project with errors is not applied; the diagnostics say why.
    write(
        &segments,
        &format!(
            "{}\nsegment broken of customer {{ no_such_feature > 1 }}\n",
            read(&segments)
        ),
    );
    let broken = apply("broken");
    assert_eq!(broken.code, 1, "{broken}");
    assert!(broken.stderr.contains("no_such_feature"), "{broken}");
    assert!(
        broken
            .stderr
            .contains("error: nothing applied: the project has 1 error"),
        "{broken}"
    );
    assert_eq!(broken.stdout, "");
    let diff = cdp(&["diff", d]);
    assert_eq!(diff.code, 1, "{diff}");
    let registry = Registry::open(&dir.join(".cdp")).unwrap();
    assert_eq!(registry.latest_snapshot().unwrap().unwrap().id, 2);
}

/// `cdp apply` killed with SIGKILL at moments spread over its whole run, 30 times: every apply
/// that printed its acknowledgement is in the registry afterwards, with the text it applied, and
/// the registry opens and takes the next apply as if nothing happened.
#[test]
fn every_acknowledged_apply_survives_kill_9() {
    let (_tmp, dir) = retail_copy();
    let d = dir.to_str().unwrap();
    let segments = dir.join("segments.cdp");
    let original = read(&segments);
    let with_threshold = |t: u64| {
        original.replacen(
            HIGH_VALUE_RULE,
            &format!("lifetime_value >= {t} or big_orders_30d >= 2"),
            1,
        )
    };
    let acknowledged_id = |stdout: &str| -> Option<u64> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("applied snapshot "))?;
        line["applied snapshot ".len()..]
            .split(':')
            .next()?
            .parse()
            .ok()
    };

    let mut acknowledged = Vec::new();
    let mut killed = 0;
    for i in 0..30u64 {
        // Every round applies a new threshold, so every snapshot makes a new version.
        let threshold = 1000 + i;
        write(&segments, &with_threshold(threshold));
        let mut child = Command::new(env!("CARGO_BIN_EXE_cdp"))
            .args(["apply", d, "--yes", "--author", "ada"])
            .args(["-m", &format!("round {i}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(3 + (i * 37) % 98));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        if let Some(id) = acknowledged_id(&String::from_utf8_lossy(&output.stdout)) {
            acknowledged.push((id, threshold));
        }
    }
    eprintln!(
        "{killed} of 30 applies killed, {} acknowledged",
        acknowledged.len()
    );

    write(&segments, &with_threshold(5000));
    let last = cdp(&["apply", d, "--yes", "--author", "ada", "-m", "after"]);
    assert_eq!(last.code, 0, "{last}");
    acknowledged.push((acknowledged_id(&last.stdout).unwrap(), 5000));

    let history = cdp(&["history", "high_value", "--dir", d]);
    assert_eq!(history.code, 0, "{history}");
    let snapshots: Vec<u64> = history_rows(&history.stdout).iter().map(|r| r.2).collect();
    for (id, _) in &acknowledged {
        assert!(snapshots.contains(id), "snapshot {id} lost:\n{history}");
    }

    let registry = Registry::open(&dir.join(".cdp")).unwrap();
    let all = registry.snapshots().unwrap();
    let ids: Vec<u64> = all.iter().map(|s| s.id).collect();
    assert_eq!(ids, (1..=all.len() as u64).collect::<Vec<_>>());
    // Every snapshot is whole: each version it pins is there with its text.
    for snapshot in &all {
        for pin in &snapshot.definitions {
            let version = registry
                .version(&pin.name, pin.version)
                .unwrap()
                .unwrap_or_else(|| panic!("snapshot {} pins a missing {pin:?}", snapshot.id));
            assert_eq!(version.hash, pin.hash);
            registry.text(&version).unwrap();
        }
    }
    for (id, threshold) in &acknowledged {
        let snapshot = registry.snapshot(*id).unwrap().unwrap();
        let pin = snapshot
            .definitions
            .iter()
            .find(|p| p.name == "high_value")
            .unwrap();
        let version = registry
            .version("high_value", pin.version)
            .unwrap()
            .unwrap();
        assert_eq!(version.snapshot, *id);
        assert!(
            registry
                .text(&version)
                .unwrap()
                .contains(&format!("lifetime_value >= {threshold} or")),
            "snapshot {id}"
        );
    }
}
