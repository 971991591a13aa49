//! Replays the fuzz targets' seed corpus (`fuzz/corpus/<target>/`) and every input a fuzzing
//! run found a fault with (`fuzz/regressions/<target>/`) through `doorman::fuzz`, so a fault
//! once found stays fixed and the targets keep working between fuzzing runs (`scripts/fuzz`).

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_input_holds_the_targets_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for (name, target) in doorman::fuzz::TARGETS {
        let seeds = inputs(&root.join("corpus").join(name));
        assert!(
            seeds.len() >= 3,
            "fuzz/corpus/{name} holds at least three seeds (has {})",
            seeds.len()
        );
        let fuzz_target = root.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(fuzz_target.exists(), "a cargo-fuzz target for {name}");
        for input in seeds
            .iter()
            .chain(inputs(&root.join("regressions").join(name)).iter())
        {
            eprintln!("{name}: {}", input.display());
            target(&std::fs::read(input).unwrap());
        }
    }
}
