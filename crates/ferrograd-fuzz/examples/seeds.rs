//! Writes every target's seeds to `DIR/<target>/seed-N`, the corpus folders cargo-fuzz starts
//! from: `cargo run -p ferrograd-fuzz --example seeds -- fuzz/corpus`.

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: seeds DIR");
        std::process::exit(2);
    };
    for target in ferrograd_fuzz::TARGETS {
        let folder = std::path::Path::new(&dir).join(target.name);
        std::fs::create_dir_all(&folder).expect("a corpus folder");
        for (i, seed) in (target.seeds)().iter().enumerate() {
            std::fs::write(folder.join(format!("seed-{i}")), seed).expect("a seed file");
        }
    }
    ferrograd_fuzz::clean_up();
}
