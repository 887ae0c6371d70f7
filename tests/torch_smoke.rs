//! libtorch is installed and linked: a matmul, a backward pass and one AdamW step.

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

#[test]
fn torch_matmul_backward_and_one_adamw_step() {
    tch::set_num_threads(1);
    let a = Tensor::from_slice(&[1f32, 2., 3., 4.]).reshape([2, 2]);
    let b = Tensor::from_slice(&[5f32, 6., 7., 8.]).reshape([2, 2]);
    let product: Vec<f32> = a.matmul(&b).reshape([-1]).try_into().expect("to vec");
    assert_eq!(product, vec![19., 22., 43., 50.]);

    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
    // loss = sum((w * x)^2) → dloss/dw = 2 w x², with x = [1, -2]: grad = [2, 8].
    let x = Tensor::from_slice(&[1f32, -2.]);
    let (lr, weight_decay) = (0.1, 0.01);
    let mut opt = nn::AdamW {
        wd: weight_decay,
        ..Default::default()
    }
    .build(&vs, lr)
    .expect("adamw");
    let loss = (&w * &x).pow_tensor_scalar(2).sum(Kind::Float);
    opt.zero_grad();
    loss.backward();
    let grad: Vec<f32> = w.grad().try_into().expect("grad");
    assert_eq!(grad, vec![2., 8.]);
    opt.step();
    // AdamW's first step: decoupled decay w·(1 − lr·wd), then −lr·sign(grad) (m̂/√v̂ = ±1).
    let expected = 1.0 * (1.0 - lr * weight_decay) - lr;
    let after: Vec<f32> = w.detach().try_into().expect("weights");
    for value in after {
        assert!(
            (f64::from(value) - expected).abs() < 1e-5,
            "{value} vs {expected}"
        );
    }
}
