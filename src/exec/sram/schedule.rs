//! The task table of one run: every pipeline step's work as tasks of the
//! interpreter (`shaders/sram_step.wgsl`), in an order where everything a
//! task waits for has a lower index (the GPU starts workgroups in index
//! order; waiting on a later one could hang).
//!
//! Nodes (each a counter the node's tasks bump when done):
//! * item (stage k, item i, micro-batch j): one per work item of the stage's
//!   program (a matmul: one task per row tile; attention: one per head);
//!   the last stage's chain ends with the read-out (arg-max, top-k, logits);
//! * link (stage k → k + 1, micro-batch j): one task per carried activation.
//!
//! Dependencies: an item waits for the item before it in its chain; the
//! first item of (k, j) waits for the link bringing j in and for stage k to
//! have released micro-batch j − 1 (its outgoing link, or its last item on
//! the last stage); link (k, j) waits for the last item of (k, j) and for
//! stage k + 1 to have released j − 1. In each pipeline step the active
//! stages' items are emitted round-robin (chips run side by side), then the
//! links from the last stage down (link (k, j) waits for link (k + 1, j − 1)
//! of the same step).

use crate::kernels::sram_step::{Op, FIRST_NODE, HDR, PARAMS, REC};
use std::ops::Range;

/// One node's code: its op, the parameters (one set shared by all its tasks,
/// which get their index as `sub`, or one set per task) and its task count.
#[derive(Clone, Debug)]
pub(super) struct Code {
    pub op: Op,
    pub params: Vec<[u32; PARAMS]>,
    pub tasks: u32,
}

impl Code {
    pub fn one(op: Op, p: &[u32]) -> Code {
        Code::shared(op, p, 1)
    }
    pub fn shared(op: Op, p: &[u32], tasks: u32) -> Code {
        let mut a = [0u32; PARAMS];
        a[..p.len()].copy_from_slice(p);
        Code {
            op,
            params: vec![a],
            tasks,
        }
    }
}

/// What a node is (for checks and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum NodeKind {
    /// Item `i` of stage `k` (`i` past the stage's items: the read-out).
    Item {
        k: usize,
        i: usize,
        j: usize,
    },
    Link {
        k: usize,
        j: usize,
    },
    /// Tensor parallelism: item `i` of the stage of chip `lane` of group `k`.
    LaneItem {
        k: usize,
        lane: usize,
        i: usize,
        j: usize,
    },
}

#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct Table {
    pub words: Vec<u32>,
    pub n_tasks: usize,
    /// Counters: the stall flag, the progress count, one per node.
    pub n_counters: usize,
    pub nodes: Vec<NodeKind>,
    /// Per node: first task and task count.
    pub node_tasks: Vec<(usize, usize)>,
    pub node_deps: Vec<Vec<usize>>,
}

/// Lays out the table for micro-batches `0..m` run through `stages` (each
/// stage's item codes) with `links[k]` after stage k and `tails[j]` (the
/// read-out of micro-batch j) at the end of the last stage, by `schedule`
/// (`Program::pipeline(m)`). `header` fills the header words after the task
/// count.
#[cfg(test)]
pub(super) fn build(
    stages: &[Vec<Code>],
    links: &[Code],
    tails: &[Option<Code>],
    schedule: &[Vec<(usize, usize)>],
    header: &[u32; HDR],
) -> Table {
    let groups: Vec<Range<usize>> = (0..stages.len()).map(|k| k..k + 1).collect();
    build_groups(stages, &groups, links, tails, schedule, header)
}

/// As [`build`], with pipeline stage k = the stages `groups[k]` (tensor
/// parallelism: one per chip of the group). A group's stages are chains of
/// their own, independent of each other and interleaved task by task; the
/// link after the group (its collective) waits for all of them, and the
/// read-out follows the group's first stage on the last group.
pub(super) fn build_groups(
    stages: &[Vec<Code>],
    groups: &[Range<usize>],
    links: &[Code],
    tails: &[Option<Code>],
    schedule: &[Vec<(usize, usize)>],
    header: &[u32; HDR],
) -> Table {
    let n = groups.len();
    let m = tails.len();
    let last = n - 1;
    let tail_stage = groups[last].start;
    let chain_len =
        |s: usize, j: usize| stages[s].len() + usize::from(s == tail_stage && tails[j].is_some());
    let code = |s: usize, i: usize, j: usize| -> &Code {
        if i < stages[s].len() {
            &stages[s][i]
        } else {
            tails[j].as_ref().expect("tail")
        }
    };
    let mut nodes: Vec<NodeKind> = Vec::new();
    let mut node_deps: Vec<Vec<usize>> = Vec::new();
    let mut node_tasks: Vec<(usize, usize)> = Vec::new();
    let mut recs: Vec<u32> = Vec::new();
    let mut last_item = vec![vec![usize::MAX; m]; stages.len()];
    let mut link_node = vec![vec![usize::MAX; m]; n];
    let mut prev_in_chain = vec![vec![usize::MAX; m]; stages.len()];
    let release = |k: usize, j: usize, last_item: &Vec<Vec<usize>>, link_node: &Vec<Vec<usize>>| {
        if k < last {
            vec![link_node[k][j]]
        } else {
            groups[k].clone().map(|s| last_item[s][j]).collect()
        }
    };
    let mut emit = |kind: NodeKind, c: &Code, j: usize, deps: Vec<usize>, recs: &mut Vec<u32>| {
        let id = nodes.len();
        let first = recs.len() / REC;
        let tasks = c.tasks.max(1) as usize;
        for s in 0..tasks {
            let op = if c.tasks == 0 { Op::Nop } else { c.op };
            recs.extend([
                op as u32,
                j as u32,
                (FIRST_NODE + id) as u32,
                0,
                0,
                s as u32,
            ]);
            recs.extend(c.params[s.min(c.params.len() - 1)]);
        }
        nodes.push(kind);
        node_deps.push(deps);
        node_tasks.push((first, tasks));
        id
    };
    for active in schedule {
        let longest = active
            .iter()
            .flat_map(|&(k, j)| groups[k].clone().map(move |s| (s, j)))
            .map(|(s, j)| chain_len(s, j))
            .max()
            .unwrap_or(0);
        for i in 0..longest {
            for &(k, j) in active {
                for s in groups[k].clone() {
                    if i >= chain_len(s, j) {
                        continue;
                    }
                    let deps = if i == 0 {
                        let mut d = Vec::new();
                        if k > 0 {
                            d.push(link_node[k - 1][j]);
                        }
                        if j > 0 {
                            d.extend(release(k, j - 1, &last_item, &link_node));
                        }
                        d
                    } else {
                        vec![prev_in_chain[s][j]]
                    };
                    let kind = if groups[k].len() == 1 {
                        NodeKind::Item { k, i, j }
                    } else {
                        NodeKind::LaneItem {
                            k,
                            lane: s - groups[k].start,
                            i,
                            j,
                        }
                    };
                    let id = emit(kind, code(s, i, j), j, deps, &mut recs);
                    prev_in_chain[s][j] = id;
                    if i + 1 == chain_len(s, j) {
                        last_item[s][j] = id;
                    }
                }
            }
        }
        let mut outgoing: Vec<(usize, usize)> =
            active.iter().copied().filter(|&(k, _)| k < last).collect();
        outgoing.sort_by_key(|&(k, _)| std::cmp::Reverse(k));
        for (k, j) in outgoing {
            let mut d: Vec<usize> = groups[k].clone().map(|s| last_item[s][j]).collect();
            if j > 0 {
                d.extend(release(k + 1, j - 1, &last_item, &link_node));
            }
            link_node[k][j] = emit(NodeKind::Link { k, j }, &links[k], j, d, &mut recs);
        }
    }
    let n_tasks = recs.len() / REC;
    let mut words = header.to_vec();
    words[0] = n_tasks as u32;
    words.extend(&recs);
    // Each node's dependency list once: (counter, its task count) pairs.
    for (id, deps) in node_deps.iter().enumerate() {
        let off = words.len() as u32;
        for &d in deps {
            words.push((FIRST_NODE + d) as u32);
            words.push(node_tasks[d].1 as u32);
        }
        let (first, tasks) = node_tasks[id];
        for t in first..first + tasks {
            words[HDR + t * REC + 3] = off;
            words[HDR + t * REC + 4] = deps.len() as u32;
        }
    }
    Table {
        words,
        n_tasks,
        n_counters: FIRST_NODE + nodes.len(),
        nodes,
        node_tasks,
        node_deps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn pipeline(stages: usize, m: usize) -> Vec<Vec<(usize, usize)>> {
        (0..m + stages - 1)
            .map(|s| {
                (0..stages)
                    .filter_map(|k| s.checked_sub(k).filter(|&j| j < m).map(|j| (k, j)))
                    .collect()
            })
            .collect()
    }

    fn check(stage_items: &[usize], m: usize, tails: bool) {
        let n = stage_items.len();
        let stages: Vec<Vec<Code>> = stage_items
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                (0..c)
                    .map(|i| Code::shared(Op::Mat, &[], 1 + ((k + i) % 3) as u32))
                    .collect()
            })
            .collect();
        let links: Vec<Code> = (0..n.saturating_sub(1))
            .map(|k| Code::shared(Op::Link, &[], (k % 3) as u32))
            .collect();
        let tails: Vec<Option<Code>> = (0..m)
            .map(|j| (tails && j % 2 == 0).then(|| Code::one(Op::Argmax, &[])))
            .collect();
        let sched = pipeline(n, m);
        let t = build(&stages, &links, &tails, &sched, &[0; HDR]);
        assert_eq!(t.words[0] as usize, t.n_tasks);
        // Every dependency's tasks come before every task that waits on it.
        for (id, deps) in t.node_deps.iter().enumerate() {
            let first = t.node_tasks[id].0;
            for &d in deps {
                let (f, c) = t.node_tasks[d];
                assert!(f + c <= first, "node {id} waits on later node {d}");
                // And the table says so.
                let r = HDR + first * REC;
                let (off, cnt) = (t.words[r + 3] as usize, t.words[r + 4] as usize);
                let pairs: Vec<(u32, u32)> = (0..cnt)
                    .map(|x| (t.words[off + 2 * x], t.words[off + 2 * x + 1]))
                    .collect();
                assert!(
                    pairs.contains(&((FIRST_NODE + d) as u32, c as u32)),
                    "{pairs:?}"
                );
            }
        }
        // Every item and link of every micro-batch exactly once; tasks tile
        // the table in node order.
        let mut seen = HashSet::new();
        let mut next = 0;
        for (id, kind) in t.nodes.iter().enumerate() {
            assert!(seen.insert(*kind), "{kind:?} twice");
            assert_eq!(t.node_tasks[id].0, next);
            next += t.node_tasks[id].1;
            for x in 0..t.node_tasks[id].1 {
                assert_eq!(
                    t.words[HDR + (next - 1 - x) * REC + 2] as usize,
                    FIRST_NODE + id
                );
            }
        }
        assert_eq!(next, t.n_tasks);
        for (j, tail) in tails.iter().enumerate() {
            for (k, &c) in stage_items.iter().enumerate() {
                let extra = usize::from(k == n - 1 && tail.is_some());
                for i in 0..c + extra {
                    assert!(seen.contains(&NodeKind::Item { k, i, j }), "{k} {i} {j}");
                }
                if k + 1 < n {
                    assert!(seen.contains(&NodeKind::Link { k, j }));
                }
            }
        }
        let items: usize =
            stage_items.iter().sum::<usize>() * m + tails.iter().flatten().count() + (n - 1) * m;
        assert_eq!(t.nodes.len(), items);
        // A micro-batch's first item on stage k waits for the link into it.
        for (id, kind) in t.nodes.iter().enumerate() {
            if let NodeKind::Item { k, i: 0, j } = *kind {
                if k > 0 {
                    let l = t
                        .nodes
                        .iter()
                        .position(|x| *x == NodeKind::Link { k: k - 1, j })
                        .unwrap();
                    assert!(t.node_deps[id].contains(&l));
                }
            }
        }
    }

    #[test]
    fn every_dependency_has_a_lower_index_and_every_item_runs_once() {
        check(&[3], 1, true);
        check(&[2, 5, 1, 4], 1, true);
        check(&[2, 5, 1, 4], 3, true);
        check(&[1, 1, 7, 2, 3, 1], 9, false);
        check(&[4, 2], 6, true);
    }

    #[test]
    fn chips_of_a_step_are_interleaved() {
        let stages: Vec<Vec<Code>> = (0..3)
            .map(|_| (0..4).map(|_| Code::one(Op::Silu, &[])).collect())
            .collect();
        let links: Vec<Code> = (0..2).map(|_| Code::one(Op::Link, &[])).collect();
        let tails = vec![None, None, None];
        let t = build(&stages, &links, &tails, &pipeline(3, 3), &[0; HDR]);
        // Step 2 runs stages 0, 1, 2 on micro-batches 2, 1, 0: their first
        // items are consecutive nodes.
        let pos = |k, i, j| {
            t.nodes
                .iter()
                .position(|x| *x == NodeKind::Item { k, i, j })
                .unwrap()
        };
        assert_eq!(pos(1, 0, 1), pos(0, 0, 2) + 1);
        assert_eq!(pos(2, 0, 0), pos(1, 0, 1) + 1);
    }

    #[test]
    fn a_groups_chains_are_independent_and_its_collective_waits_for_all() {
        // Group 1 is three chips (tensor parallelism) between two single ones.
        let lens = [2usize, 3, 1, 2, 1];
        let stages: Vec<Vec<Code>> = lens
            .iter()
            .map(|&c| (0..c).map(|_| Code::shared(Op::Mat, &[], 2)).collect())
            .collect();
        let groups = vec![0..1, 1..4, 4..5];
        let links: Vec<Code> = (0..2).map(|_| Code::shared(Op::Link, &[], 4)).collect();
        let tails = vec![None, Some(Code::one(Op::Argmax, &[]))];
        let t = build_groups(&stages, &groups, &links, &tails, &pipeline(3, 2), &[0; HDR]);
        let pos = |k: NodeKind| t.nodes.iter().position(|x| *x == k).unwrap();
        for (id, deps) in t.node_deps.iter().enumerate() {
            for &d in deps {
                assert!(t.node_tasks[d].0 + t.node_tasks[d].1 <= t.node_tasks[id].0);
            }
        }
        for j in 0..2 {
            let link = pos(NodeKind::Link { k: 1, j });
            let into = pos(NodeKind::Link { k: 0, j });
            for lane in 0..3 {
                let n = lens[1 + lane];
                let item = |i| pos(NodeKind::LaneItem { k: 1, lane, i, j });
                // The collective waits for every chip's last item.
                assert!(t.node_deps[link].contains(&item(n - 1)));
                // A chip's chain waits only on itself (and the link in).
                assert!(t.node_deps[item(0)].contains(&into));
                for i in 1..n {
                    assert_eq!(t.node_deps[item(i)], vec![item(i - 1)]);
                }
            }
        }
        // The chips of the group run side by side: their first items are
        // consecutive nodes.
        let a = pos(NodeKind::LaneItem {
            k: 1,
            lane: 0,
            i: 0,
            j: 0,
        });
        assert_eq!(
            pos(NodeKind::LaneItem {
                k: 1,
                lane: 2,
                i: 0,
                j: 0
            }),
            a + 2
        );
        // The read-out follows the last group's chain.
        assert!(t.nodes.contains(&NodeKind::Item { k: 2, i: 1, j: 1 }));
    }
}
