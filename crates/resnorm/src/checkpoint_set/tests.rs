//! Tests of checkpoint sets: saving, reading, failed and interrupted saves, recovery.

use super::*;

fn temp_run(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnorm-set-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn save(run: &Path, step: u64, body: &[u8]) -> Result<()> {
    save_set(run, step, |set| {
        set.json("state.json", &serde_json::json!({ "step": step }))?;
        set.file("body.bin", |out| out.write_all(body))
    })
}

#[test]
fn a_run_from_before_sets_is_named_as_such() {
    let run = temp_run("old-layout");
    fs::create_dir_all(&run).unwrap();
    let empty = CheckpointSet::open(&run).unwrap_err().to_string();
    assert!(empty.contains("holds no checkpoint"), "{empty}");
    fs::write(run.join("state.json"), "{}").unwrap();
    let old = CheckpointSet::open(&run).unwrap_err().to_string();
    assert!(old.contains("older resnorm"), "{old}");
    fs::remove_dir_all(&run).unwrap();
}

/// A writer that accepts `budget` bytes, then fails like a full disk.
struct FailAfter<'a> {
    inner: &'a mut dyn Write,
    budget: usize,
}

impl Write for FailAfter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("no space left (injected)"));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        self.inner.write(&buf[..n])
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn a_save_replaces_the_set_and_leaves_nothing_behind() {
    let run = temp_run("replace");
    save(&run, 1, b"one").unwrap();
    save(&run, 2, b"two").unwrap();
    let set = CheckpointSet::open(&run).unwrap();
    assert_eq!(
        (set.step(), set.read("body.bin").unwrap()),
        (2, b"two".to_vec())
    );
    let mut entries: Vec<String> = fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, [LIVE_DIR]);
    // The set directory itself opens too.
    assert_eq!(CheckpointSet::open(&run.join(LIVE_DIR)).unwrap().step(), 2);
    fs::remove_dir_all(&run).unwrap();
}

#[test]
fn a_writer_failing_at_any_byte_keeps_the_previous_set() {
    let run = temp_run("failing");
    save(&run, 1, b"the first body").unwrap();
    let tensor_data = [1.5f32; 40];
    let shape = [40];
    let tensors = [crate::checkpoint::TensorRef {
        name: "w",
        shape: &shape,
        data: &tensor_data,
    }];
    let file = crate::checkpoint::TensorFile::new(&tensors, &BTreeMap::new()).unwrap();
    let mut full = Vec::new();
    file.write_to(&mut full).unwrap();
    for budget in (0..full.len()).step_by(7) {
        let err = save_set(&run, 2, |set| {
            set.json("state.json", &serde_json::json!({ "step": 2 }))?;
            set.file("model.safetensors", |out| {
                file.write_to(&mut FailAfter { inner: out, budget })
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        let set = CheckpointSet::open(&run).unwrap();
        assert_eq!(set.step(), 1);
        set.verify().unwrap();
        assert!(!run.join(PARTIAL_DIR).exists());
    }
    fs::remove_dir_all(&run).unwrap();
}

/// A complete set of `step` in `dir` (not installed), as step 1 of a save leaves it.
fn complete_set(run: &Path, dir: &str, step: u64, body: &[u8]) {
    let scratch = run.join("scratch");
    save(&scratch, step, body).unwrap();
    fs::rename(scratch.join(LIVE_DIR), run.join(dir)).unwrap();
    fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn an_interrupted_swap_is_finished_and_leftovers_removed() {
    let run = temp_run("swap");
    save(&run, 1, b"one").unwrap();
    let step = |run: &Path| CheckpointSet::open(run).unwrap().step();
    // Killed between steps 2 and 3: no live set, a complete partial one.
    fs::rename(run.join(LIVE_DIR), run.join(PREVIOUS_DIR)).unwrap();
    complete_set(&run, PARTIAL_DIR, 2, b"two");
    fs::write(run.join(".metrics.jsonl.99.0.tmp"), "{\"st").unwrap();
    assert_eq!(step(&run), 2);
    recover(&run).unwrap();
    assert_eq!(step(&run), 2);
    assert!(!run.join(PARTIAL_DIR).exists() && !run.join(PREVIOUS_DIR).exists());
    assert!(!run.join(".metrics.jsonl.99.0.tmp").exists());

    // Killed after the files of step 3 were complete, before the swap: step 3 wins.
    complete_set(&run, PARTIAL_DIR, 3, b"three");
    assert_eq!(step(&run), 2);
    recover(&run).unwrap();
    assert_eq!(step(&run), 3);
    assert!(!run.join(PARTIAL_DIR).exists() && !run.join(PREVIOUS_DIR).exists());
    // A complete partial set never replaces a newer live one.
    complete_set(&run, PARTIAL_DIR, 1, b"one");
    recover(&run).unwrap();
    assert_eq!(step(&run), 3);

    // Killed while writing the first files of step 4: the partial set is incomplete.
    fs::create_dir(run.join(PARTIAL_DIR)).unwrap();
    fs::write(run.join(PARTIAL_DIR).join("state.json"), "{\"st").unwrap();
    assert_eq!(step(&run), 3);
    recover(&run).unwrap();
    assert!(!run.join(PARTIAL_DIR).exists());

    // Killed after step 2 with a damaged partial set: the previous one is restored.
    fs::rename(run.join(LIVE_DIR), run.join(PREVIOUS_DIR)).unwrap();
    fs::create_dir(run.join(PARTIAL_DIR)).unwrap();
    assert_eq!(step(&run), 3);
    recover(&run).unwrap();
    assert_eq!(step(&run), 3);
    fs::remove_dir_all(&run).unwrap();
}

#[test]
fn torn_and_damaged_sets_are_refused_by_file() {
    let run = temp_run("torn");
    save(&run, 3, b"three").unwrap();
    let set = CheckpointSet::open(&run).unwrap();
    let body = set.dir().join("body.bin");
    fs::write(&body, b"thre").unwrap();
    let err = set.verify().unwrap_err().to_string();
    assert!(
        err.contains("body.bin: 4 bytes, but set.json of step 3 says 5"),
        "{err}"
    );
    fs::write(&body, b"three").unwrap();
    set.verify().unwrap();
    assert!(set.check_step("state.json", Some(3)).is_ok());
    let err = set
        .check_step("state.json", Some(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds step 2, but set.json says 3"), "{err}");
    let err = CheckpointSet::open(&run.join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a checkpoint directory"), "{err}");
    fs::create_dir_all(run.join("empty")).unwrap();
    let err = CheckpointSet::open(&run.join("empty"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no checkpoint"), "{err}");
    fs::remove_dir_all(&run).unwrap();
}
