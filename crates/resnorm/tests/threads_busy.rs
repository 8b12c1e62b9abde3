//! `threads::busy` under the pattern that once hung the study: many short busy sections in a
//! row, each running nested parallel joins, so that workers pick up spinning jobs while they
//! wait inside a join; and the spinning joins that one-row products and decoding use.

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

/// `for_each_chunk_spinning` inside and outside `busy`, nested in itself: every chunk is
/// visited once, with its index, and the first failing chunk's error comes back.
#[test]
fn chunks_spinning_visit_every_chunk_and_return_the_first_error() {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let fill = |data: &mut [usize]| {
            resnorm::threads::for_each_chunk_spinning(data, 10, &|i, chunk| {
                resnorm::threads::for_each_chunk_spinning(chunk, 3, &|j, part| {
                    part.fill(100 * i + j);
                    Ok::<(), usize>(())
                })
            })
        };
        for _ in 0..500 {
            let mut outside = vec![0usize; 95];
            fill(&mut outside).unwrap();
            let mut inside = vec![0usize; 95];
            resnorm::threads::busy(|| fill(&mut inside)).unwrap();
            assert_eq!(outside, inside);
            assert_eq!((outside[0], outside[13], outside[94]), (0, 101, 901));
        }
        let mut data = vec![0usize; 95];
        let failed = resnorm::threads::for_each_chunk_spinning(&mut data, 10, &|i, _| {
            if i % 4 == 3 {
                Err(i)
            } else {
                Ok(())
            }
        });
        sender.send(failed).unwrap();
    });
    let failed = receiver
        .recv_timeout(Duration::from_secs(120))
        .expect("spinning chunks deadlocked");
    assert_eq!(failed, Err(3));
}

/// A panic in the half another worker may run reaches the caller instead of leaving the
/// first half spinning.
#[test]
fn join_spinning_propagates_a_panic_of_its_second_half() {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let caught = std::panic::catch_unwind(|| {
            resnorm::threads::pool()
                .install(|| resnorm::threads::join_spinning(|| 1, || panic!("second half")))
        });
        sender.send(caught.is_err()).unwrap();
    });
    let panicked = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect("join_spinning hung after a panic");
    assert!(panicked);
}
