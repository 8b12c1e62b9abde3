//! The image layers against naive references, finite differences and PyTorch fixtures.

mod common;

use resnorm::gradcheck::vision;

#[test]
fn gradient_checks_pass() {
    for check in vision::checks() {
        println!("{check:?}");
        assert!(check.passed, "{check:?}");
    }
}
