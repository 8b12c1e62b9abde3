//! Beam search against references: one beam is greedy decoding token for token, more beams
//! never score below greedy on a tiny model, and with beams enough to keep every hypothesis
//! it finds what an exhaustive search over a tiny vocabulary finds, under every length
//! penalty.

use resnorm::models::gpt::Placement;
use resnorm::models::seq2seq::decode::{greedy, StepDecoder};
use resnorm::models::seq2seq::{Seq2Seq, Seq2SeqConfig};
use resnorm::rng::Rng;
use resnorm::translate::beam::{beam_search, BeamOptions, Hypothesis, LengthPenalty};

const BOS: u32 = 1;
const EOS: u32 = 2;

/// A model with random weights (so that its distributions are far from uniform).
fn model(vocab: usize, max_len: usize, placement: Placement, seed: u64) -> Seq2Seq {
    let config = Seq2SeqConfig {
        vocab,
        width: 8,
        heads: 2,
        encoder_layers: 2,
        decoder_layers: 2,
        max_len,
        placement,
        ..Seq2SeqConfig::default()
    };
    let mut model = Seq2Seq::new(config, seed).unwrap();
    let mut rng = Rng::new(seed + 1);
    model.visit_params_mut(&mut |p| resnorm::gradcheck::gpt::randomize_param(p, &mut rng));
    model
}

/// Four sentences of 5, 3, 4 and 1 tokens, padded to 5.
fn sources(vocab: usize, seed: u64) -> (Vec<u32>, Vec<usize>) {
    let lengths = vec![5, 3, 4, 1];
    let mut rng = Rng::new(seed);
    let mut src = vec![0u32; lengths.len() * 5];
    for (row, &n) in src.chunks_exact_mut(5).zip(&lengths) {
        for id in &mut row[..n] {
            *id = 3 + (rng.next_u64() % (vocab as u64 - 3)) as u32;
        }
    }
    (src, lengths)
}

/// The summed log-probability of `tokens` (then `</s>` when `ended`) for sentence `b`.
fn log_prob(
    model: &Seq2Seq,
    (src, lengths): (&[u32], &[usize]),
    b: usize,
    tokens: &[u32],
    ended: bool,
) -> f32 {
    let s = src.len() / lengths.len();
    let vocab = model.config().vocab;
    let steps = tokens.len() + usize::from(ended);
    let src = &src[b * s..][..s];
    let mut decoder = StepDecoder::new(model, src, &lengths[b..=b], steps).unwrap();
    let (mut fed, mut sum) = (BOS, 0.0f32);
    for t in 0..steps {
        let row = decoder.step(&[fed]).unwrap();
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let lse = max + row.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
        let next = tokens.get(t).copied().unwrap_or(EOS);
        sum += row[next as usize] - lse;
        fed = next;
        assert_eq!(row.len(), vocab);
    }
    sum
}

#[test]
fn one_beam_is_greedy_decoding() {
    for placement in [Placement::PreLn, Placement::PostLn, Placement::ResiDual] {
        for seed in 0..3 {
            let model = model(13, 9, placement, seed);
            let (src, lengths) = sources(13, seed);
            let want = greedy(&model, &src, &lengths, (BOS, EOS), 9).unwrap();
            let options = BeamOptions::default();
            let got = beam_search(&model, &src, &lengths, (BOS, EOS), 9, &options).unwrap();
            let got: Vec<Vec<u32>> = got.into_iter().map(|h| h.tokens).collect();
            assert_eq!(got, want, "{placement} seed {seed}");
        }
    }
}

#[test]
fn more_beams_score_no_lower_than_greedy_unless_fairseqs_stop_cuts_them() {
    let max_len = 8;
    for seed in 0..4 {
        let model = model(13, max_len, Placement::PreLn, seed);
        let (src, lengths) = sources(13, seed + 10);
        let greedy = greedy(&model, &src, &lengths, (BOS, EOS), max_len).unwrap();
        for (lenpen, penalty) in [
            (1.0, LengthPenalty::Fairseq),
            (0.0, LengthPenalty::Fairseq),
            (1.0, LengthPenalty::Gnmt),
        ] {
            for beams in [2, 4, 8] {
                let options = BeamOptions {
                    beams,
                    lenpen,
                    penalty,
                };
                let best =
                    beam_search(&model, &src, &lengths, (BOS, EOS), max_len, &options).unwrap();
                for (b, (h, g)) in best.iter().zip(&greedy).enumerate() {
                    let ended = g.len() < max_len;
                    let sum = log_prob(&model, (&src, &lengths), b, g, ended);
                    let floor = options.normalize(sum, g.len() + usize::from(ended));
                    // Not under fairseq's len^1: its search stops once K hypotheses have
                    // finished, and a longer greedy one can have the better mean (seed 2,
                    // sentence 0, 2 beams: [4] scores -1.084, greedy's [4, 4, 4, 4, 4] -0.934).
                    let comparable = lenpen == 0.0 || penalty == LengthPenalty::Gnmt;
                    assert!(
                        !comparable || h.score >= floor - 1e-5,
                        "seed {seed} {options:?} sentence {b}: beam {} < greedy {floor}",
                        h.score
                    );
                    let ended = h.tokens.len() < max_len;
                    let sum = log_prob(&model, (&src, &lengths), b, &h.tokens, ended);
                    let len = h.tokens.len() + usize::from(ended);
                    let score = options.normalize(sum, len);
                    assert!(
                        (score - h.score).abs() < 1e-4,
                        "its score is its tokens' {score} vs {}",
                        h.score
                    );
                }
            }
        }
    }
}

/// Every hypothesis of at most `max_len` tokens: those ended by `</s>` and those cut at the
/// limit, best first by `options`' normalized score.
fn exhaustive(
    model: &Seq2Seq,
    sentence: (&[u32], &[usize]),
    b: usize,
    max_len: usize,
    options: &BeamOptions,
) -> Hypothesis {
    let vocab = model.config().vocab as u32;
    let mut best = Hypothesis {
        tokens: Vec::new(),
        score: f32::NEG_INFINITY,
    };
    let mut prefixes: Vec<Vec<u32>> = vec![Vec::new()];
    for len in 1..=max_len {
        let mut longer = Vec::new();
        for prefix in &prefixes {
            let sum = log_prob(model, sentence, b, prefix, true);
            let score = options.normalize(sum, len);
            if score > best.score {
                best = Hypothesis {
                    tokens: prefix.clone(),
                    score,
                };
            }
            for token in (0..vocab).filter(|&t| t != EOS) {
                let mut next = prefix.clone();
                next.push(token);
                if len == max_len {
                    let score = options.normalize(log_prob(model, sentence, b, &next, false), len);
                    if score > best.score {
                        best = Hypothesis {
                            tokens: next,
                            score,
                        };
                    }
                } else {
                    longer.push(next);
                }
            }
        }
        prefixes = longer;
    }
    best
}

#[test]
fn enough_beams_find_the_exhaustive_searchs_best() {
    // 5 tokens and 3 positions: 1 + 4 + 16 hypotheses end in </s>, 64 are cut, 85 in all.
    let (vocab, max_len) = (5, 3);
    let options = [
        (0.0, LengthPenalty::Fairseq),
        (1.0, LengthPenalty::Fairseq),
        (2.0, LengthPenalty::Fairseq),
        (-1.0, LengthPenalty::Fairseq),
        (1.0, LengthPenalty::Gnmt),
    ];
    for seed in 0..2 {
        let model = model(vocab, 6, Placement::PreLn, seed);
        let (src, lengths) = sources(vocab, seed);
        for (lenpen, penalty) in options {
            let options = BeamOptions {
                beams: 85,
                lenpen,
                penalty,
            };
            let got = beam_search(&model, &src, &lengths, (BOS, EOS), max_len, &options).unwrap();
            for (b, h) in got.iter().enumerate() {
                let want = exhaustive(&model, (&src, &lengths), b, max_len, &options);
                assert_eq!(
                    h.tokens, want.tokens,
                    "seed {seed} {options:?} sentence {b}"
                );
                assert!(
                    (h.score - want.score).abs() < 1e-4,
                    "{} vs {}",
                    h.score,
                    want.score
                );
            }
        }
    }
}

#[test]
fn length_penalties_order_long_and_short_hypotheses() {
    // Raw sums prefer the short one; dividing by the length prefers the long one.
    let (short, long) = ((-2.5f32, 2), (-3.0f32, 3));
    let rank = |options: BeamOptions| {
        options.normalize(long.0, long.1) > options.normalize(short.0, short.1)
    };
    let fairseq = |lenpen| BeamOptions {
        beams: 2,
        lenpen,
        penalty: LengthPenalty::Fairseq,
    };
    assert!(!rank(fairseq(0.0)));
    assert!(rank(fairseq(1.0)));
    assert!(rank(fairseq(2.0)));
    assert_eq!(fairseq(1.0).normalize(-3.0, 3), -1.0);
    let gnmt = |lenpen| BeamOptions {
        beams: 2,
        lenpen,
        penalty: LengthPenalty::Gnmt,
    };
    assert_eq!(
        gnmt(1.0).normalize(-3.0, 1),
        -3.0,
        "GNMT's penalty is 1 at length 1"
    );
    assert!(
        !rank(gnmt(1.0)),
        "GNMT's penalty grows slower: (8/6) / (7/6) < 3/2"
    );
    assert!(rank(gnmt(3.0)));
}

#[test]
fn bad_options_are_refused() {
    let model = model(7, 4, Placement::PreLn, 0);
    let (src, lengths) = sources(7, 0);
    for beams in [0, 129, usize::MAX] {
        let options = BeamOptions {
            beams,
            ..BeamOptions::default()
        };
        assert!(beam_search(&model, &src, &lengths, (BOS, EOS), 4, &options).is_err());
    }
    let options = BeamOptions {
        lenpen: f32::NAN,
        ..BeamOptions::default()
    };
    assert!(options.check().is_err());
    assert!("gnmt".parse::<LengthPenalty>().is_ok());
    assert!("wu".parse::<LengthPenalty>().is_err());
}
