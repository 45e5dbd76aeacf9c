//! Aligned plain-text tables: what a person reads at a glance.

/// Columns are separated by two spaces and padded to their widest cell; the last column is
/// not padded, so no line ends in spaces (which would make snapshots and `diff` noisy).
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row; missing cells are blank and extra cells are kept (and widen the table).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, one line per row after the header, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map_or("", String::as_str);
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                if i + 1 < columns {
                    let pad = width - cell.chars().count();
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_space() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["1".into(), "a".into()]);
        t.row(vec!["100".into(), "bb".into()]);
        assert_eq!(t.render(), "ID   NAME\n1    a\n100  bb\n");
    }

    #[test]
    fn a_blank_last_cell_leaves_no_trailing_space() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["xyz".into(), String::new()]);
        assert_eq!(t.render(), "A    B\nxyz\n");
    }
}
