//! The `[data]` config section: defaults, unknown keys, impossible values.

use polytune::data::{AugmentConfig, DataConfig, DataError, SourceKind};

/// A whole config file as the trainer will parse it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data: DataConfig,
}

fn parse(text: &str) -> Result<DataConfig, String> {
    let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
    f.data.validate().map_err(|e| e.to_string())?;
    Ok(f.data)
}

#[test]
fn defaults_and_a_full_section() {
    let d = parse("[data]\n").unwrap();
    assert_eq!(d, DataConfig::default());
    assert_eq!((d.source, d.image_size()), (SourceKind::Digits, 8));
    assert_eq!(d.augment, AugmentConfig::default());
    let d = parse(
        r#"
[data]
source = "flowers102"
path = "data/flowers102"
image_size = 64
cache_dir = "/tmp/cache"
skip_corrupt = true
threads = 2

[data.augment]
p = 0.5
max_rotate = 10.0
pad_jitter = false
"#,
    )
    .unwrap();
    assert_eq!(d.source, SourceKind::Flowers102);
    assert_eq!(d.image_size(), 64);
    assert!(d.skip_corrupt);
    assert_eq!(
        (d.augment.p, d.augment.max_rotate, d.augment.pad_jitter),
        (0.5, 10.0, false)
    );
    assert_eq!(d.augment.max_zoom, 1.1); // unspecified keys keep the seed's values
    assert_eq!(
        DataConfig::new(SourceKind::Csv, Some("m.csv".into())).image_size(),
        224
    );
    // Round trip through TOML.
    let text = toml::to_string(&d).unwrap();
    assert_eq!(DataConfig::from_toml(&text).unwrap(), d);
}

#[test]
fn unknown_keys_and_values_are_named() {
    let e = parse("[data]\nimage_sise = 3\n").unwrap_err();
    assert!(e.contains("image_sise"), "{e}");
    let e = parse("[data.augment]\nmax_rotation = 3\n").unwrap_err();
    assert!(e.contains("max_rotation"), "{e}");
    let e = parse("[data]\nsource = \"imagenet\"\n").unwrap_err();
    assert!(e.contains("imagenet") && e.contains("flowers102"), "{e}");
    let e = parse("[data]\nimage_size = -3\n").unwrap_err();
    assert!(e.contains("image_size"), "{e}");
}

#[test]
fn impossible_values_name_key_and_value() {
    let cases = [
        ("[data]\nimage_size = 0\n", "data.image_size", "0"),
        ("[data]\nimage_size = 100000\n", "data.image_size", "100000"),
        ("[data]\nsource = \"csv\"\n", "data.path", "(missing)"),
        (
            "[data]\nsource = \"folders\"\npath = \"\"\n",
            "data.path",
            "\"\"",
        ),
        ("[data]\nvalid_fraction = 1.0\n", "data.valid_fraction", "1"),
        ("[data]\ncache_dir = \"\"\n", "data.cache_dir", "\"\""),
        ("[data.augment]\np = 1.5\n", "data.augment.p", "1.5"),
        (
            "[data.augment]\nmin_zoom = 0.0\n",
            "data.augment.min_zoom",
            "0",
        ),
        (
            "[data.augment]\nmin_zoom = 1.2\nmax_zoom = 1.1\n",
            "data.augment.max_zoom",
            "1.1",
        ),
        (
            "[data.augment]\nmax_lighting = 1.0\n",
            "data.augment.max_lighting",
            "1",
        ),
        (
            "[data.augment]\nmax_warp = -0.1\n",
            "data.augment.max_warp",
            "-0.1",
        ),
        (
            "[data.augment]\nmax_rotate = 200.0\n",
            "data.augment.max_rotate",
            "200",
        ),
    ];
    for (text, key, value) in cases {
        let e = parse(text).unwrap_err();
        assert!(e.contains(&format!("`{key}` = {value}")), "{text:?}: {e}");
    }
    // The typed error carries the key.
    let e = DataConfig::from_toml("image_size = 0").unwrap_err();
    assert!(
        matches!(e, DataError::Config { ref key, .. } if key == "data.image_size"),
        "{e}"
    );
}

#[test]
fn relative_paths_resolve_against_a_base() {
    let mut d = parse("[data]\nsource = \"csv\"\npath = \"m.csv\"\n").unwrap();
    d.resolve_paths(std::path::Path::new("/etc/study"));
    assert_eq!(d.path.unwrap(), std::path::Path::new("/etc/study/m.csv"));
    assert_eq!(
        d.cache_dir,
        std::path::Path::new("/etc/study/.polytune-cache")
    );
}

#[test]
fn item_size_defaults_to_image_size_and_is_range_checked() {
    // The embedded default: one size (8 px), as before the item stage.
    let d = parse("[data]\n").unwrap();
    assert_eq!((d.image_size(), d.item_size()), (8, 8));
    let d = parse("[data]\nimage_size = 16\n").unwrap();
    assert_eq!(d.item_size(), 16);
    let d = parse("[data]\nsource = \"folders\"\npath = \"x\"\nitem_size = 460\n").unwrap();
    assert_eq!((d.image_size(), d.item_size()), (224, 460));
    for (text, value) in [
        ("item_size = 0", "0"),
        ("item_size = 4097", "4097"),
        ("item_size = 300", "300"), // digits: at most 256
    ] {
        let e = parse(&format!("[data]\n{text}\n")).unwrap_err();
        assert!(
            e.contains("data.item_size") && e.contains(value),
            "{text}: {e}"
        );
    }
    // The Flowers-102 configs use the seed's Resize(460) before 224 px.
    for file in ["flowers102-resnet50.toml", "flowers102-resnet50-seed.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs")
            .join(file);
        let table: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let data: DataConfig = table["data"].clone().try_into().unwrap();
        assert_eq!((data.image_size(), data.item_size()), (224, 460), "{file}");
    }
}
