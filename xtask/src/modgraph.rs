//! The hypervisor's module graph: which top-level modules of `hypervisor/src` name which others (`use crate::…` and
//! `crate::x::` paths, outside comments and test modules), and its cycles. Dependencies must point down: the unit
//! test below fails when any cycle exists (issue 10: none through `sched/`, `vmexit`, `dom0`, `hypercall/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Edges between top-level modules: module → the modules it names.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Source text without `//` comments and without the `#[cfg(test)]` module at its end.
fn code_of(src: &str) -> String {
    let mut out = String::new();
    let mut lines = src.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") && lines.peek().is_some_and(|n| n.trim_start().starts_with("mod tests")) {
            break;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The crate-level modules that `src` names.
pub fn named_modules(src: &str) -> BTreeSet<String> {
    let code = code_of(src);
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        // Skip `keel_crate::` and the like: the match must start an identifier.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first segment of each path at depth 1.
            let mut depth = 1;
            let mut expect = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect = true,
                    c if depth == 1 && expect && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident_at(&group[j..]).to_string());
                        expect = false;
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(rest);
            if !id.is_empty() {
                out.insert(id.to_string());
            }
        }
    }
    out
}

/// Reads `src_dir` (a crate's `src/`) into its top-level module graph. `lib.rs` and `main.rs` are the crate
/// root and not a node.
pub fn read_graph(src_dir: &Path) -> std::io::Result<Graph> {
    let mut modules = BTreeSet::new();
    let mut files = Vec::new();
    for e in std::fs::read_dir(src_dir)? {
        let p = e?.path();
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if p.is_dir() {
            modules.insert(name.clone());
            collect(&p, &name, &mut files)?;
        } else if p.extension().is_some_and(|x| x == "rs") && name != "lib" && name != "main" {
            modules.insert(name.clone());
            files.push((name, p));
        }
    }
    let mut g = Graph::new();
    for (module, path) in files {
        if path.file_stem().is_some_and(|s| s == "tests") {
            continue;
        }
        let src = std::fs::read_to_string(&path)?;
        let deps = g.entry(module.clone()).or_default();
        for m in named_modules(&src) {
            if m != module && modules.contains(&m) {
                deps.insert(m);
            }
        }
    }
    Ok(g)
}

fn collect(dir: &Path, module: &str, out: &mut Vec<(String, std::path::PathBuf)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            collect(&p, module, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push((module.to_string(), p));
        }
    }
    Ok(())
}

/// The graph's cycles: its strongly connected components of more than one module (Tarjan), each sorted.
pub fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

/// `cargo xtask modgraph`: prints the graph and its cycles; an error when there is one.
pub fn cmd() -> crate::util::Result<()> {
    let g = read_graph(&crate::util::root().join("hypervisor/src"))?;
    for (m, deps) in &g {
        println!("{m} -> {}", deps.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    let c = cycles(&g);
    if c.is_empty() {
        println!("no import cycle");
        Ok(())
    } else {
        for cycle in &c {
            println!("cycle: {}", cycle.join(", "));
        }
        Err(format!("{} import cycle(s) in hypervisor/src", c.len()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_paths_and_groups_outside_comments() {
        let src = "use crate::arch::x86::{apic, cpu};\nuse crate::{domain::{self, Vcpu}, sched, vmexit as v};\n\
                   // crate::dom0 in a comment\nfn f() { crate::mm::free(); keel_crate::x(); }\n\
                   #[cfg(test)]\nmod tests {\n use crate::hvm;\n}\n";
        let got: Vec<String> = named_modules(src).into_iter().collect();
        assert_eq!(got, ["arch", "domain", "mm", "sched", "vmexit"]);
    }

    #[test]
    fn reports_a_cycle() {
        let mut g = Graph::new();
        for (a, b) in [("sched", "run"), ("run", "vmexit"), ("vmexit", "sched"), ("domain", "mm")] {
            g.entry(a.into()).or_default().insert(b.into());
        }
        assert_eq!(cycles(&g), [["run", "sched", "vmexit"]]);
        g.get_mut("vmexit").unwrap().clear();
        assert!(cycles(&g).is_empty());
    }

    /// Issue 10's acceptance: the hypervisor's dependencies point down. A cycle here means some lower module
    /// (the scheduler, the domain layer) calls up into a higher one: register a hook instead.
    #[test]
    fn the_hypervisor_module_graph_has_no_cycle() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hypervisor/src");
        let g = read_graph(&src).expect("hypervisor/src");
        assert!(g.contains_key("sched") && g["vmexit"].contains("hypercall"), "graph misread: {g:?}");
        let c = cycles(&g);
        assert!(c.is_empty(), "import cycles in hypervisor/src: {c:?}\ngraph: {g:#?}");
        // The scheduler picks and accounts: it calls out only through hooks.
        for up in ["domain", "dom0", "hypercall", "run", "timers", "vmexit"] {
            assert!(!g["sched"].contains(up), "sched/ names {up}");
        }
        assert!(!g["hypercall"].contains("dom0"), "hypercall/ names dom0: call up through a hook");
    }
}
