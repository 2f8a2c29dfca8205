//! MLP: tanh accuracy, forward vs an f64 reference, analytic backward vs f64 central
//! differences, workspace reuse, zero output init, determinism, shape errors.

mod common;

use common::{assert_grad_close, central_diff, mlp_forward_f64, to_f64};
use deltaplan_learn::nn::{tanh_inplace, TANH_CLAMP};
use deltaplan_learn::{fast_tanh, LearnError, Mlp, MlpInit, MlpWorkspace, OutputInit};
use rand::{RngExt, SeedableRng};

fn rng(seed: u64) -> rand_pcg::Pcg64 {
    rand_pcg::Pcg64::seed_from_u64(seed)
}

#[test]
fn fast_tanh_max_abs_error_below_2e7_on_dense_grid() {
    let mut max_err = 0.0f64;
    let mut worst = 0.0f32;
    // 2,000,001 points over [-10, 10] plus the far tails.
    let grid = (0..=2_000_000).map(|k| -10.0 + k as f32 * 1e-5).chain([
        -1e30,
        -50.0,
        -TANH_CLAMP,
        TANH_CLAMP,
        50.0,
        1e30,
        0.625,
        -0.625,
        0.624_999_94,
        f32::MIN_POSITIVE,
        1e-30,
    ]);
    for x in grid {
        let err = (f64::from(fast_tanh(x)) - f64::from(x).tanh()).abs();
        if err > max_err {
            max_err = err;
            worst = x;
        }
    }
    println!("fast_tanh max abs error {max_err:e} at x = {worst}");
    assert!(max_err <= 2e-7, "max abs error {max_err:e} at x = {worst}");
    assert_eq!(fast_tanh(0.0), 0.0);
    assert_eq!(fast_tanh(f32::INFINITY), fast_tanh(TANH_CLAMP));
    assert!(fast_tanh(1e30) <= 1.0 && fast_tanh(-1e30) >= -1.0);
    assert!(fast_tanh(f32::NAN).is_nan());
}

#[test]
fn fast_tanh_is_odd_and_slice_version_matches_scalar_bits() {
    let mut r = rng(3);
    let mut xs: Vec<f32> = (0..1003).map(|_| r.random_range(-12.0f32..12.0)).collect();
    for &x in &xs {
        assert_eq!(fast_tanh(-x), -fast_tanh(x));
    }
    let want: Vec<u32> = xs.iter().map(|&x| fast_tanh(x).to_bits()).collect();
    tanh_inplace(&mut xs);
    assert_eq!(xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
}

fn random_mlp(sizes: &[usize], seed: u64) -> Mlp {
    let mut r = rng(seed);
    let mut m = Mlp::new(sizes, MlpInit::orthogonal(0.7), &mut r).unwrap();
    // Non-zero biases so their gradients are exercised.
    for t in m
        .named_tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect::<Vec<_>>()
    {
        if t.0.ends_with("bias") {
            let data: Vec<f32> = (0..t.1[0]).map(|_| r.random_range(-0.5f32..0.5)).collect();
            m.set_tensor(&t.0, &t.1, &data).unwrap();
        }
    }
    m
}

#[test]
fn forward_matches_f64_reference() {
    let sizes = [5, 7, 6, 3];
    let m = random_mlp(&sizes, 1);
    let mut r = rng(2);
    let x: Vec<f32> = (0..9 * 5).map(|_| r.random_range(-2.0f32..2.0)).collect();
    let mut ws = MlpWorkspace::new();
    let out = m.forward(&x, &mut ws).unwrap().to_vec();
    let want = mlp_forward_f64(&sizes, &to_f64(m.params()), &to_f64(&x));
    assert_grad_close("forward", &out, &want, 2e-6, 1e-6);
}

/// Tolerance: analytic f32 gradients vs f64 central differences (h = 1e-6) of an f64 model:
/// |diff| <= 2e-5 + 1e-4 |fd| (f32 rounding and the fast tanh's <= 2e-7 error dominate).
#[test]
fn backward_matches_f64_finite_differences() {
    let sizes = [4, 6, 5, 3];
    let mut m = random_mlp(&sizes, 7);
    let mut r = rng(8);
    let b = 5;
    let x: Vec<f32> = (0..b * 4).map(|_| r.random_range(-1.5f32..1.5)).collect();
    // L = sum(c * out): dL/dout = c.
    let c: Vec<f32> = (0..b * 3).map(|_| r.random_range(-1.0f32..1.0)).collect();
    let mut ws = MlpWorkspace::new();
    m.forward(&x, &mut ws).unwrap();
    let mut dx = vec![0.0f32; x.len()];
    m.zero_grad();
    m.backward(&x, &mut ws, &c, Some(&mut dx)).unwrap();

    let (p64, x64, c64) = (to_f64(m.params()), to_f64(&x), to_f64(&c));
    let loss = |p: &[f64], x: &[f64]| -> f64 {
        mlp_forward_f64(&sizes, p, x)
            .iter()
            .zip(&c64)
            .map(|(o, c)| o * c)
            .sum()
    };
    let fd_p = central_diff(&p64, 1e-6, |p| loss(p, &x64));
    let fd_x = central_diff(&x64, 1e-6, |xx| loss(&p64, xx));
    let e1 = assert_grad_close("dparams", m.grads(), &fd_p, 2e-5, 1e-4);
    let e2 = assert_grad_close("dinput", &dx, &fd_x, 2e-5, 1e-4);
    println!("mlp backward vs finite differences: max abs diff params {e1:e}, input {e2:e}");

    // Gradients accumulate across backward calls.
    let once = m.grads().to_vec();
    m.forward(&x, &mut ws).unwrap();
    m.backward(&x, &mut ws, &c, None).unwrap();
    for (g2, g1) in m.grads().iter().zip(&once) {
        assert!((g2 - 2.0 * g1).abs() <= 1e-6 * (1.0 + g1.abs()));
    }
}

#[test]
fn workspace_is_reused_and_batch_size_changes_are_exact() {
    let sizes = [3, 8, 2];
    let m = random_mlp(&sizes, 4);
    let mut r = rng(5);
    let x8: Vec<f32> = (0..8 * 3).map(|_| r.random_range(-1.0f32..1.0)).collect();
    let mut ws = MlpWorkspace::new();
    let first = m.forward(&x8, &mut ws).unwrap();
    let (ptr, first) = (first.as_ptr(), first.to_vec());
    // A smaller batch reuses the buffers and gives each row's exact result.
    let row3 = m.forward(&x8[..3 * 3], &mut ws).unwrap().to_vec();
    let again = m.forward(&x8, &mut ws).unwrap();
    assert_eq!(
        again.as_ptr(),
        ptr,
        "no reallocation at a batch size already seen"
    );
    assert_eq!(again, first.as_slice());
    let fresh = m
        .forward(&x8[..3 * 3], &mut MlpWorkspace::new())
        .unwrap()
        .to_vec();
    assert_eq!(row3, fresh);
    // Empty batch is fine.
    assert!(m.forward(&[], &mut ws).unwrap().is_empty());
}

#[test]
fn zero_output_init_outputs_exact_zeros() {
    let init = MlpInit {
        hidden_gain: std::f32::consts::SQRT_2,
        output: OutputInit::Zero,
    };
    let m = Mlp::new(&[6, 16, 16, 4], init, &mut rng(1)).unwrap();
    let x: Vec<f32> = (0..10 * 6).map(|k| (k as f32 * 0.37).sin() * 5.0).collect();
    let mut ws = MlpWorkspace::new();
    let out = m.forward(&x, &mut ws).unwrap();
    assert!(out.iter().all(|&v| v == 0.0));
    let last = m.named_tensors();
    assert!(last[4].data.iter().chain(last[5].data).all(|&v| v == 0.0));
    assert!(
        last[0].data.iter().any(|&v| v != 0.0),
        "hidden layers stay orthogonal"
    );
}

#[test]
fn same_seed_same_bits_and_pytorch_names() {
    let a = Mlp::new(&[5, 9, 2], MlpInit::orthogonal(0.01), &mut rng(11)).unwrap();
    let b = Mlp::new(&[5, 9, 2], MlpInit::orthogonal(0.01), &mut rng(11)).unwrap();
    let c = Mlp::new(&[5, 9, 2], MlpInit::orthogonal(0.01), &mut rng(12)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.params(), c.params());
    let names: Vec<_> = a
        .named_tensors()
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect();
    assert_eq!(
        names,
        vec![
            ("0.weight".to_string(), vec![9, 5]),
            ("0.bias".to_string(), vec![9]),
            ("2.weight".to_string(), vec![2, 9]),
            ("2.bias".to_string(), vec![2]),
        ]
    );
    assert_eq!(a.num_params(), 5 * 9 + 9 + 9 * 2 + 2);
    // Orthogonal output gain 0.01: rows of the [2, 9] weight have norm 0.01.
    let w = &a.named_tensors()[2];
    for row in w.data.chunks(9) {
        let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 0.01).abs() < 1e-6);
    }
}

#[test]
fn shape_errors_name_the_buffer() {
    let mut m = Mlp::new(&[3, 4, 2], MlpInit::orthogonal(1.0), &mut rng(1)).unwrap();
    let mut ws = MlpWorkspace::new();
    match m.forward(&[0.0; 7], &mut ws) {
        Err(LearnError::NotMultiple {
            len: 7, width: 3, ..
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    m.forward(&[0.0; 6], &mut ws).unwrap();
    let err = m.backward(&[0.0; 6], &mut ws, &[0.0; 3], None).unwrap_err();
    assert_eq!(
        err,
        LearnError::Shape {
            name: "mlp dout".into(),
            expected: 4,
            got: 3
        }
    );
    assert!(err.to_string().contains("mlp dout"));
    assert!(Mlp::new(&[3], MlpInit::orthogonal(1.0), &mut rng(1)).is_err());
    assert!(Mlp::new(&[3, 0, 2], MlpInit::orthogonal(1.0), &mut rng(1)).is_err());
}
