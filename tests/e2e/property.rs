//! Property tests through the library: restore(snapshot(tree)) == tree for random trees, and a
//! parallel run stores exactly what a sequential one does.

use std::fs;
use std::path::Path;

use cairn_store::{InitOptions, NoProgress, Repo, RestoreOptions, SnapshotOptions};
use proptest::prelude::*;

use crate::util::*;

#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>, u32),
    Dir(Vec<(String, Node)>),
    Link(String),
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        4 => (prop::collection::vec(any::<u8>(), 0..3000), prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o400]))
            .prop_map(|(d, m)| Node::File(d, m)),
        1 => (0usize..300_000, any::<u8>()).prop_map(|(n, b)| Node::File((0..n).map(|i| (i as u8).wrapping_mul(b) ^ (i >> 9) as u8).collect(), 0o644)),
        1 => "[a-z./]{1,20}".prop_map(Node::Link),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop::collection::btree_map("[a-zA-Z0-9 ._-]{1,12}", inner, 0..6)
            .prop_map(|m| Node::Dir(m.into_iter().collect()))
    })
}

fn build(path: &Path, node: &Node) {
    match node {
        Node::File(data, mode) => {
            fs::write(path, data).unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap();
        }
        Node::Link(t) => std::os::unix::fs::symlink(t, path).unwrap(),
        Node::Dir(children) => {
            fs::create_dir(path).unwrap();
            for (name, child) in children {
                if name != "." && name != ".." {
                    build(&path.join(name), child);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn restore_of_snapshot_is_the_tree_and_parallel_equals_sequential(children in prop::collection::vec(("[a-z]{1,8}", node()), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        build(&src, &Node::Dir(children.into_iter().collect::<std::collections::BTreeMap<_, _>>().into_iter().collect()));
        let want = describe(&src);
        // Repositories and restores go elsewhere: the directories above the source are part of
        // the snapshot, and must not change between the two runs.
        let work = tempfile::tempdir().unwrap();

        let mut roots = Vec::new();
        for threads in [1usize, 2] {
            let repo = Repo::init(&cairn_store::Location::local(work.path().join(format!("repo{threads}"))), &InitOptions::default()).unwrap();
            let mut opts = SnapshotOptions::new(vec![src.clone()]);
            opts.threads = threads;
            opts.host = Some("prop".into());
            repo.snapshot(&opts, &NoProgress).unwrap();
            let snap = repo.resolve("latest").unwrap();
            // The source's own subtree: the directories above it (/tmp) are shared with other
            // tests and may change between the runs.
            roots.push(repo.find_entry(snap.record.root, &src).unwrap().expect("source entry").subtree);
            let mut ro = RestoreOptions::default();
            ro.target = work.path().join(format!("out{threads}"));
            ro.threads = threads;
            let report = repo.restore(&snap, &ro, &NoProgress).unwrap();
            prop_assert!(report.damaged.is_empty());
            assert_same(&want, &describe(&restored(&ro.target, &src)), "property round trip");
        }
        prop_assert_eq!(roots[0], roots[1], "parallel and sequential runs build the same tree");
    }
}
