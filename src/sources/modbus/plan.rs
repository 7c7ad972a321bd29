//! Request planning: merge a device's points into as few reads as possible.
//!
//! Points of one table are sorted by address and merged greedily into blocks: a point
//! joins the current block when the gap from the block's end is at most `max_gap` and
//! the block stays within `max_registers` (≤ 125) or `max_bits` (≤ 2000). Forced
//! blocks from the config are read as given and take the points that lie inside them.
//!
//! When a device answers a block with exception 02 (illegal address) or 03 (illegal
//! value), the poller calls [`Block::split`] and replaces the block with its halves,
//! down to single points, so one bad address never blanks its neighbours. The split
//! plan is kept for the life of the poller.

use super::decode::{Layout, Table};
use crate::model::PointId;

/// One point's place in a device's address space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Item {
    pub point: PointId,
    pub table: Table,
    /// 0-based protocol address.
    pub address: u16,
    pub layout: Layout,
}

impl Item {
    /// Registers (or bits) the item occupies.
    pub fn width(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.layout.data_type.width()
        }
    }

    /// One past the last address (u32 so 65535 + width does not overflow).
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.width())
    }
}

/// Limits for merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_registers: u16,
    pub max_bits: u16,
    /// Largest hole of unused registers a block may span.
    pub max_gap_registers: u16,
    /// Largest hole of unused bits a block may span.
    pub max_gap_bits: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_registers: 125,
            max_bits: 2000,
            max_gap_registers: 8,
            max_gap_bits: 64,
        }
    }
}

/// A block the config insists on reading in one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forced {
    pub table: Table,
    pub start: u16,
    pub count: u16,
}

/// One read request and the points it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// Sorted by address.
    pub items: Vec<Item>,
}

impl Block {
    fn from_items(table: Table, items: Vec<Item>) -> Block {
        let start = items.iter().map(|i| i.address).min().unwrap_or(0);
        let end = items
            .iter()
            .map(Item::end)
            .max()
            .unwrap_or(u32::from(start));
        Block {
            table,
            start,
            count: u16::try_from(end - u32::from(start)).unwrap_or(u16::MAX),
            items,
        }
    }

    /// Split into two blocks at the middle item boundary, or `None` when every item
    /// starts at the same address (nothing left to isolate).
    pub fn split(&self) -> Option<(Block, Block)> {
        let first = self.items.first()?.address;
        if self.items.iter().all(|i| i.address == first) {
            return None;
        }
        // Split between two different addresses, as near the middle as possible.
        let mid = self.items.len() / 2;
        let cut = (mid..self.items.len())
            .chain((1..mid).rev())
            .find(|&k| k > 0 && self.items[k].address != self.items[k - 1].address)?;
        let (a, b) = self.items.split_at(cut);
        Some((
            Block::from_items(self.table, a.to_vec()),
            Block::from_items(self.table, b.to_vec()),
        ))
    }
}

/// Plan the reads for one device (one unit id).
pub fn plan(items: &[Item], limits: Limits, forced: &[Forced]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut rest: Vec<Item> = Vec::with_capacity(items.len());
    let mut forced_items: Vec<Vec<Item>> = vec![Vec::new(); forced.len()];
    'items: for it in items {
        for (k, f) in forced.iter().enumerate() {
            if f.table == it.table
                && it.address >= f.start
                && it.end() <= u32::from(f.start) + u32::from(f.count)
            {
                forced_items[k].push(*it);
                continue 'items;
            }
        }
        rest.push(*it);
    }
    for (f, mut its) in forced.iter().zip(forced_items) {
        its.sort_by_key(|i| i.address);
        blocks.push(Block {
            table: f.table,
            start: f.start,
            count: f.count,
            items: its,
        });
    }
    rest.sort_by_key(|i| (i.table, i.address));
    let mut current: Vec<Item> = Vec::new();
    for it in rest {
        if let Some(first) = current.first() {
            let table = first.table;
            let start = u32::from(first.address);
            let end = current.iter().map(Item::end).max().unwrap_or(start);
            let (max, gap) = if table.is_bits() {
                (limits.max_bits.min(2000), limits.max_gap_bits)
            } else {
                (limits.max_registers.min(125), limits.max_gap_registers)
            };
            let fits = it.table == table
                && u32::from(it.address) <= end + u32::from(gap)
                && it.end().max(end) - start <= u32::from(max);
            if !fits {
                blocks.push(Block::from_items(table, std::mem::take(&mut current)));
            }
        }
        current.push(it);
    }
    if let Some(first) = current.first() {
        let table = first.table;
        blocks.push(Block::from_items(table, current));
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::super::decode::{ByteOrder, DataType};
    use super::*;

    fn item(p: u32, table: Table, address: u16, data_type: DataType) -> Item {
        Item {
            point: PointId(p),
            table,
            address,
            layout: Layout {
                data_type,
                order: ByteOrder::Abcd,
                ..Layout::default()
            },
        }
    }

    #[test]
    fn fifty_f32_registers_become_one_read() {
        let items: Vec<Item> = (0..25)
            .map(|i| item(i, Table::Holding, (i * 2) as u16, DataType::F32))
            .collect();
        let blocks = plan(&items, Limits::default(), &[]);
        assert_eq!(blocks.len(), 1);
        assert_eq!((blocks[0].start, blocks[0].count), (0, 50));
    }

    #[test]
    fn limits_and_gaps_split_blocks() {
        // 100 f32 values = 200 registers: two reads of at most 125.
        let items: Vec<Item> = (0..100)
            .map(|i| item(i, Table::Input, (i * 2) as u16, DataType::F32))
            .collect();
        let blocks = plan(&items, Limits::default(), &[]);
        assert_eq!(blocks.len(), 2);
        assert!(blocks.iter().all(|b| b.count <= 125));
        assert_eq!(blocks.iter().map(|b| b.items.len()).sum::<usize>(), 100);
        // A gap wider than max_gap starts a new block; tables never mix.
        let items = vec![
            item(0, Table::Holding, 0, DataType::U16),
            item(1, Table::Holding, 5, DataType::U16),
            item(2, Table::Holding, 40, DataType::U16),
            item(3, Table::Input, 1, DataType::U16),
            item(4, Table::Coil, 0, DataType::Bool),
            item(5, Table::Coil, 1999, DataType::Bool),
        ];
        let blocks = plan(&items, Limits::default(), &[]);
        let shape: Vec<(Table, u16, u16)> =
            blocks.iter().map(|b| (b.table, b.start, b.count)).collect();
        assert_eq!(
            shape,
            vec![
                (Table::Coil, 0, 1),
                (Table::Coil, 1999, 1),
                (Table::Holding, 0, 6),
                (Table::Holding, 40, 1),
                (Table::Input, 1, 1),
            ]
        );
    }

    #[test]
    fn forced_blocks_take_their_points() {
        let items = vec![
            item(0, Table::Holding, 10, DataType::U16),
            item(1, Table::Holding, 12, DataType::F32),
            item(2, Table::Holding, 100, DataType::U16),
        ];
        let forced = [Forced {
            table: Table::Holding,
            start: 0,
            count: 20,
        }];
        let blocks = plan(&items, Limits::default(), &forced);
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (blocks[0].start, blocks[0].count, blocks[0].items.len()),
            (0, 20, 2)
        );
        assert_eq!((blocks[1].start, blocks[1].count), (100, 1));
    }

    #[test]
    fn splitting_isolates_one_address() {
        let items: Vec<Item> = (0..8)
            .map(|i| item(i, Table::Holding, i as u16, DataType::U16))
            .collect();
        let mut blocks = plan(&items, Limits::default(), &[]);
        assert_eq!(blocks.len(), 1);
        // Address 5 is bad: split until the block holding it has one item.
        let bad = 5u16;
        let mut rounds = 0;
        loop {
            let k = blocks
                .iter()
                .position(|b| b.items.iter().any(|i| i.address == bad))
                .unwrap();
            match blocks[k].split() {
                Some((a, b)) => {
                    blocks.splice(k..=k, [a, b]);
                }
                None => break,
            }
            rounds += 1;
        }
        assert_eq!(rounds, 3, "log2(8) splits");
        let isolated = blocks.iter().find(|b| b.start == bad).unwrap();
        assert_eq!((isolated.count, isolated.items.len()), (1, 1));
        assert_eq!(blocks.iter().map(|b| b.items.len()).sum::<usize>(), 8);
    }

    #[test]
    fn two_bits_of_one_register_cannot_be_split_apart() {
        let mut a = item(0, Table::Holding, 3, DataType::Bit);
        a.layout.bit = 1;
        let mut b = item(1, Table::Holding, 3, DataType::Bit);
        b.layout.bit = 2;
        let blocks = plan(&[a, b], Limits::default(), &[]);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].split(), None);
    }
}
