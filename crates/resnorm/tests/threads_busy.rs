//! `threads::busy` under the pattern that once hung the study: many short busy sections in a
//! row, each running nested parallel joins, so that workers pick up spinning jobs while they
//! wait inside a join.

use rayon::prelude::*;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn many_short_busy_sections_with_nested_joins_finish() {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let data: Vec<u64> = (0..4096).collect();
        let mut total = 0u64;
        for _ in 0..2000 {
            total += resnorm::threads::busy(|| {
                resnorm::threads::pool().install(|| {
                    data.par_chunks(256)
                        .map(|chunk| chunk.par_iter().sum::<u64>())
                        .sum::<u64>()
                })
            });
        }
        sender.send(total).unwrap();
    });
    let total = receiver
        .recv_timeout(Duration::from_secs(120))
        .expect("busy sections deadlocked");
    assert_eq!(total, 2000 * (4095 * 4096 / 2));
}
