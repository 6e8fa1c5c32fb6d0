//! Batches, epoch order, augmentation determinism and the digits split.

use polytune::data::augment::{augment_into, CachedImage, ResizeMode};
use polytune::data::{
    digits, epoch_order, Augment, AugmentConfig, AugmentParams, AugmentScratch, BatchPlan,
    DataConfig, Dataset, Evaluation, ImageSet, IMAGENET_MEAN, IMAGENET_STD,
};

/// A small in-memory set of 7 images of 5×5 with varied pixels.
fn set() -> ImageSet {
    let size = 5usize;
    let pixels: Vec<u8> = (0..7 * size * size * 3)
        .map(|i| ((i * 37 + i / 7) % 256) as u8)
        .collect();
    ImageSet::from_pixels(size as u32, pixels, vec![0, 1, 2, 0, 1, 2, 0]).unwrap()
}

#[test]
fn digits_split_is_stratified_fixed_and_documented() {
    let (grey, labels) = digits::raw();
    assert_eq!(labels.len(), 1797);
    // The first UCI digit is a 0 whose top rows are well known (values 0..16).
    let want: [u8; 16] = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0];
    let scaled: Vec<u8> = want
        .iter()
        .map(|&v| (v as f64 * 255.0 / 16.0).round() as u8)
        .collect();
    assert_eq!(labels[0], 0);
    assert_eq!(&grey[..16], &scaled[..]);
    let mut per_class = [0usize; 10];
    for &l in &labels {
        per_class[l] += 1;
    }
    assert_eq!(
        per_class,
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );

    let (train, valid) = digits::split_indices(&labels, 0.2, digits::DEFAULT_SPLIT_SEED);
    assert_eq!((train.len(), valid.len()), (1438, 359));
    let mut valid_per_class = [0usize; 10];
    for &i in &valid {
        valid_per_class[labels[i]] += 1;
    }
    assert_eq!(valid_per_class, [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]);
    let mut all: Vec<usize> = train.iter().chain(&valid).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1797).collect::<Vec<_>>());
    // Fixed by the seed; another seed picks other images.
    assert_eq!(
        digits::split_indices(&labels, 0.2, digits::DEFAULT_SPLIT_SEED).1,
        valid
    );
    assert_ne!(digits::split_indices(&labels, 0.2, 1).1, valid);

    // The data set serves them as RGB with grey replicated.
    // Without a test split the 359 validation digits are cut in two: the
    // search scores one half, the confirmation the other (held out).
    let data = Dataset::load(&DataConfig::default()).unwrap();
    let held = Dataset::load_for(&DataConfig::default(), Evaluation::Holdout).unwrap();
    assert_eq!(
        (
            data.train().len(),
            data.valid().len(),
            held.valid().len(),
            data.num_classes()
        ),
        (1438, 178, 181, 10)
    );
    assert_eq!(held.train().labels(), data.train().labels());
    let mut halves: Vec<usize> = (0..data.valid().len())
        .map(|i| data.valid().source_index(i))
        .chain((0..held.valid().len()).map(|i| held.valid().source_index(i)))
        .collect();
    halves.sort_unstable();
    assert_eq!(
        halves,
        (0..359).collect::<Vec<_>>(),
        "disjoint halves of the validation split"
    );
    // Stratified: each class splits as evenly as its count allows.
    for c in 0..10 {
        let n = |set: &polytune::data::ImageSet| set.labels().iter().filter(|&&l| l == c).count();
        assert!(n(data.valid()).abs_diff(n(held.valid())) <= 1, "class {c}");
    }
    assert!(!data.has_test());
    assert!(data.load_test().is_err());
    let first_valid = valid[data.valid().source_index(0)];
    let img = data.valid().image(0);
    for p in 0..64 {
        assert_eq!(&img[p * 3..p * 3 + 3], &[grey[first_valid * 64 + p]; 3]);
    }
    assert_eq!(data.valid().label(0), labels[first_valid]);
    // Upscaled copies keep their labels and range.
    let big = Dataset::digits(16).unwrap();
    assert_eq!(big.train().image_size(), 16);
    assert_eq!(big.train().labels(), data.train().labels());
}

#[test]
fn eval_batches_are_normalised_nchw_in_order() {
    let s = set();
    let batches: Vec<_> = s.batches(&BatchPlan::eval(3)).unwrap().collect();
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        [3, 3, 1]
    );
    let b = &batches[1];
    assert_eq!(b.indices, vec![3, 4, 5]);
    assert_eq!(b.labels, vec![0, 1, 2]);
    assert_eq!(b.shape(), [3, 3, 5, 5]);
    assert_eq!(b.view, None);
    for (k, &i) in b.indices.iter().enumerate() {
        let img = s.image(i);
        for c in 0..3 {
            for p in 0..25 {
                let want = (img[p * 3 + c] as f64 / 255.0 - IMAGENET_MEAN[c] as f64)
                    / IMAGENET_STD[c] as f64;
                let got = b.images[((k * 3 + c) * 25) + p] as f64;
                assert!(
                    (got - want).abs() < 1e-5,
                    "sample {i} c{c} p{p}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn epoch_order_is_a_seeded_permutation() {
    let a = epoch_order(100, 7, 3);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(100, 7, 3));
    assert_ne!(a, epoch_order(100, 7, 4));
    assert_ne!(a, epoch_order(100, 8, 3));
    // The batches of a plan follow it; drop_last drops the partial batch.
    let s = set();
    let plan = BatchPlan::train(3, 7, 3, AugmentConfig::none());
    let it = s.batches(&plan).unwrap();
    assert_eq!(it.len(), 2);
    let order = epoch_order(7, 7, 3);
    let idx: Vec<usize> = it.flat_map(|b| b.indices).collect();
    assert_eq!(idx, order[..6]);
    // A split smaller than one batch still yields it.
    let plan = BatchPlan::train(64, 7, 0, AugmentConfig::none());
    assert_eq!(
        s.batches(&plan)
            .unwrap()
            .map(|b| b.len())
            .collect::<Vec<_>>(),
        [7]
    );
}

#[test]
fn bad_batch_requests_are_errors() {
    let s = set();
    assert!(s
        .batches(&BatchPlan::eval(0))
        .unwrap_err()
        .to_string()
        .contains("batch size"));
    let mut plan = BatchPlan::eval(2);
    plan.views = Some(0);
    assert!(s.batches(&plan).is_err());
    let e = s.assemble(&[0, 7], None).unwrap_err().to_string();
    assert!(
        e.contains("sample index 7") && e.contains("7 images"),
        "{e}"
    );
}

#[test]
fn p_zero_is_identity_and_defaults_change_images() {
    let s = set();
    let idx: Vec<usize> = (0..7).collect();
    let plain = s.assemble(&idx, None).unwrap();
    let none = Augment {
        config: AugmentConfig::none(),
        seed: 1,
        view: 0,
    };
    assert_eq!(s.assemble(&idx, Some(&none)).unwrap().images, plain.images);
    // p = 0 with every magnitude at its default is still the identity.
    let p0 = Augment {
        config: AugmentConfig {
            p: 0.0,
            p_flip: 0.0,
            p_hsv: 0.0,
            min_scale: 1.0,
            pad_jitter: false,
            ..AugmentConfig::default()
        },
        seed: 1,
        view: 0,
    };
    assert_eq!(s.assemble(&idx, Some(&p0)).unwrap().images, plain.images);
    // p = 1: every sample changes, values stay finite.
    let p1 = Augment {
        config: AugmentConfig {
            p: 1.0,
            ..AugmentConfig::default()
        },
        seed: 1,
        view: 0,
    };
    let aug = s.assemble(&idx, Some(&p1)).unwrap();
    assert!(aug.images.iter().all(|v| v.is_finite()));
    let per = 75;
    for k in 0..7 {
        assert_ne!(
            aug.images[k * per..(k + 1) * per],
            plain.images[k * per..(k + 1) * per],
            "sample {k}"
        );
    }
}

#[test]
fn augmentation_is_reproducible_and_independent_of_batching_and_threads() {
    let s = set();
    let aug = Augment {
        config: AugmentConfig {
            p: 0.7,
            ..AugmentConfig::default()
        },
        seed: 99,
        view: 4,
    };
    let a = s.assemble(&[0, 1, 2, 3, 4, 5, 6], Some(&aug)).unwrap();
    let b = s.assemble(&[0, 1, 2, 3, 4, 5, 6], Some(&aug)).unwrap();
    assert_eq!(a, b);
    // Sample 5 alone, or after another sample, gets the same pixels.
    let alone = s.assemble(&[5], Some(&aug)).unwrap();
    let pair = s.assemble(&[2, 5], Some(&aug)).unwrap();
    assert_eq!(alone.images[..], a.images[5 * 75..6 * 75]);
    assert_eq!(pair.images[75..], a.images[5 * 75..6 * 75]);
    // One thread or several: the same batch.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let c = one.install(|| s.assemble(&[0, 1, 2, 3, 4, 5, 6], Some(&aug)).unwrap());
    assert_eq!(a, c);
    // Another seed or view gives other augmentations.
    let other_seed = Augment {
        seed: 100,
        ..aug.clone()
    };
    assert_ne!(
        s.assemble(&[0, 1, 2, 3, 4, 5, 6], Some(&other_seed))
            .unwrap()
            .images,
        a.images
    );
    let other_view = Augment {
        view: 5,
        ..aug.clone()
    };
    assert_ne!(
        s.assemble(&[0, 1, 2, 3, 4, 5, 6], Some(&other_view))
            .unwrap()
            .images,
        a.images
    );
}

#[test]
fn two_runs_with_one_seed_see_identical_epochs_and_views_repeat() {
    let d1 = Dataset::digits(8).unwrap();
    let d2 = Dataset::digits(8).unwrap();
    for epoch in 0..2 {
        let plan = BatchPlan::train(100, 5, epoch, AugmentConfig::default());
        let a: Vec<_> = d1.train().batches(&plan).unwrap().collect();
        let b: Vec<_> = d2.train().batches(&plan).unwrap().collect();
        assert_eq!(a, b);
    }
    // With 2 views, epochs 0 and 2 augment each sample identically (in a
    // different order); without views they differ.
    let s = set();
    let mut plan = BatchPlan::train(
        7,
        3,
        0,
        AugmentConfig {
            p: 1.0,
            ..AugmentConfig::default()
        },
    );
    plan.views = Some(2);
    let per_sample = |plan: &BatchPlan| {
        let b = s.batches(plan).unwrap().next().unwrap();
        let mut v: Vec<(usize, Vec<f32>)> = b
            .indices
            .iter()
            .enumerate()
            .map(|(k, &i)| (i, b.images[k * 75..(k + 1) * 75].to_vec()))
            .collect();
        v.sort_by_key(|x| x.0);
        (b.indices.clone(), b.view, v)
    };
    let (o0, v0, e0) = per_sample(&plan);
    plan.epoch = 2;
    let (o2, v2, e2) = per_sample(&plan);
    assert_ne!(o0, o2);
    assert_eq!((v0, v2), (Some(0), Some(0)));
    assert_eq!(e0, e2);
    plan.views = None;
    let (_, v2b, e2b) = per_sample(&plan);
    assert_eq!(v2b, Some(2));
    assert_ne!(e0, e2b);
}

#[test]
fn drawn_parameters_follow_the_configured_distributions() {
    let cfg = AugmentConfig::default();
    let n = 4000;
    let (mut flips, mut rot, mut zoom, mut hue) = (0, 0, 0, 0);
    for i in 0..n {
        let p = AugmentParams::draw(&cfg, 11, 0, i);
        flips += p.flip as usize;
        if p.rotate_deg != 0.0 {
            rot += 1;
            assert!(p.rotate_deg.abs() <= 5.0);
        }
        if p.zoom != 1.0 {
            zoom += 1;
            assert!((0.9..=1.1).contains(&p.zoom));
        }
        if p.hue_shift != 0.0 {
            hue += 1;
            // exp(U(ln 0.7, -ln 0.7)) - 1 lies in [-0.3, 0.4286).
            assert!((-0.3..0.42858).contains(&p.hue_shift), "{}", p.hue_shift);
        }
        assert!((0.25..=0.75).contains(&p.brightness));
        assert!((0.5..=2.0).contains(&p.contrast));
        assert!((0.0..1.0).contains(&p.pad_pct.0));
    }
    // Rotate and zoom applied with p = 0.3: 1200 ± 4σ (σ ≈ 29); flips with
    // fastai's Flip p = 0.5 (2000 ± 4σ, σ ≈ 32), hue with Hue's p = 0.75
    // (3000 ± 4σ, σ ≈ 27).
    for (what, k) in [("rotate", rot), ("zoom", zoom)] {
        assert!((1084..=1316).contains(&k), "{what}: {k} of {n}");
    }
    assert!((1874..=2126).contains(&flips), "flip: {flips} of {n}");
    assert!((2890..=3110).contains(&hue), "hue: {hue} of {n}");
}

#[test]
fn pad_jitter_moves_the_image_inside_its_padding() {
    // A 4×2 original centred in a 4×4 square: rows 1 and 2 hold the image.
    let size = 4usize;
    let mut src = vec![0u8; size * size * 3];
    for v in &mut src[size * 3..3 * size * 3] {
        *v = 200;
    }
    let rows = |pct_y: f64| -> Vec<f32> {
        let p = AugmentParams {
            pad_pct: (0.5, pct_y),
            ..AugmentParams::identity()
        };
        let mut out = vec![0.0; src.len()];
        let img = CachedImage {
            pixels: &src,
            size: (4, 4),
            orig: (4, 2),
            item: 4,
            resize: ResizeMode::Pad,
        };
        augment_into(&p, &img, size, &mut AugmentScratch::default(), &mut out);
        (0..size).map(|r| out[r * size]).collect()
    };
    let on = 200.0 / 255.0;
    // fastai: pct 0 puts the image at the top, pct 1 at the bottom.
    assert_eq!(rows(0.0), vec![on, on, 0.0, 0.0]);
    assert_eq!(rows(1.0), vec![0.0, 0.0, on, on]);
    assert_eq!(rows(0.5), vec![0.0, on, on, 0.0]);
}

#[test]
fn items_are_resampled_to_the_image_size() {
    // Two 8-px items with a horizontal ramp, batched at 5 px: the validation
    // path (no augment) samples the item at columns 0, 1.75, …, 7.
    let size = 8usize;
    let mut px = vec![0u8; 2 * size * size * 3];
    for (k, v) in px.iter_mut().enumerate() {
        *v = (((k / 3) % size) * 20) as u8;
    }
    let set = ImageSet::from_pixels(8, px, vec![0, 1])
        .unwrap()
        .with_image_size(5)
        .unwrap();
    assert_eq!((set.item_size(), set.image_size()), (8, 5));
    let b = set.assemble(&[1, 0], None).unwrap();
    assert_eq!(b.shape(), [2, 3, 5, 5]);
    for j in 0..5 {
        let want = (20.0 * 1.75 * j as f32 / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        assert!(
            (b.images[j] - want).abs() < 1e-5,
            "{j}: {} vs {want}",
            b.images[j]
        );
    }
    // Training batches come out at 5 px too.
    let plan = BatchPlan::train(2, 3, 0, AugmentConfig::default());
    let t = set.batches(&plan).unwrap().next().unwrap();
    assert_eq!(t.shape(), [2, 3, 5, 5]);
    assert!(t.images.iter().all(|v| v.is_finite()));
}
