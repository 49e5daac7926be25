//! The bf16 tiles of `bf16.rs` on x86: `vdpbf16ps` (AVX512-BF16, two products per f32 lane
//! in one instruction), else the same two roundings from fused multiply-adds on the values
//! widened to f32 (a bf16 is the top half of an f32: widening is a shift or a mask).

use super::bf16::Tile;
use super::{Level, MR, NR};
use std::arch::x86_64::*;

/// The tile's sums on `level`, written out.
///
/// # Safety
/// The processor has `level`'s instructions; `tile.a` holds `tile.rows` rows of
/// `2·tile.pairs` values, `tile.stride` apart, `tile.b` one panel of `tile.pairs` pairs, and
/// the tile's outputs are the caller's to write.
pub(crate) unsafe fn run(tile: &Tile, level: Level) {
    debug_assert!(tile.rows >= 1 && tile.rows <= MR);
    debug_assert!(tile.a.len() >= (tile.rows - 1) * tile.stride + 2 * tile.pairs);
    debug_assert!(tile.b.len() >= tile.pairs * NR * 2);
    macro_rules! rows {
        ($kernel:ident) => {
            match tile.rows {
                1 => $kernel::<1>(tile),
                2 => $kernel::<2>(tile),
                3 => $kernel::<3>(tile),
                4 => $kernel::<4>(tile),
                5 => $kernel::<5>(tile),
                6 => $kernel::<6>(tile),
                7 => $kernel::<7>(tile),
                _ => $kernel::<8>(tile),
            }
        };
    }
    // SAFETY: the caller's promises, passed on.
    unsafe {
        match level {
            Level::Bf16 => rows!(dpbf16),
            Level::Avx512 => rows!(avx512),
            Level::Avx2 => {
                // Two rows at a time: twelve accumulators of AVX2's sixteen registers.
                for r0 in (0..tile.rows).step_by(2) {
                    let part = tile.below(r0);
                    if part.rows >= 2 {
                        avx2::<2>(&part);
                    } else {
                        avx2::<1>(&part);
                    }
                }
            }
            _ => unreachable!("{level:?} has no bf16 kernel"),
        }
    }
}

/// Row r's two values of pair p, as one 32-bit lane.
#[inline(always)]
unsafe fn pair(tile: &Tile, r: usize, p: usize) -> i32 {
    // SAFETY: row r < rows and pair p < pairs lie within `tile.a` (the caller's promise).
    unsafe { (tile.a.as_ptr().add(r * tile.stride + 2 * p) as *const i32).read_unaligned() }
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn dpbf16<const R: usize>(tile: &Tile) {
    let mut c = [[_mm512_setzero_ps(); 3]; R];
    let b = tile.b.as_ptr();
    for p in 0..tile.pairs {
        // SAFETY: pair p of the panel is 192 bytes at p·192.
        let w: [__m512bh; 3] = unsafe {
            [0, 1, 2].map(|v| {
                std::mem::transmute(_mm512_loadu_si512(b.add(p * NR * 2 + 32 * v) as *const _))
            })
        };
        for (r, row) in c.iter_mut().enumerate() {
            // SAFETY: r < R = rows; a bf16 pair and an `__m512bh` lane are both 32 bits.
            let a: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(pair(tile, r, p))) };
            for v in 0..3 {
                row[v] = _mm512_dpbf16_ps(row[v], a, w[v]);
            }
        }
    }
    // SAFETY: the tile's outputs are the caller's to write.
    unsafe { store_and_write(tile, &c) };
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn avx512<const R: usize>(tile: &Tile) {
    let mut c = [[_mm512_setzero_ps(); 3]; R];
    let b = tile.b.as_ptr();
    let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    // The odd value is a lane's top half, the even one its bottom half moved up.
    let odd = |v: __m512i| _mm512_castsi512_ps(_mm512_and_si512(v, high));
    let even = |v: __m512i| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
    for p in 0..tile.pairs {
        // SAFETY: as in `dpbf16`.
        let w = unsafe {
            [0, 1, 2].map(|v| _mm512_loadu_si512(b.add(p * NR * 2 + 32 * v) as *const _))
        };
        for (r, row) in c.iter_mut().enumerate() {
            // SAFETY: r < R = rows.
            let a = _mm512_set1_epi32(unsafe { pair(tile, r, p) });
            let (a_odd, a_even) = (odd(a), even(a));
            for v in 0..3 {
                row[v] = _mm512_fmadd_ps(a_odd, odd(w[v]), row[v]);
                row[v] = _mm512_fmadd_ps(a_even, even(w[v]), row[v]);
            }
        }
    }
    // SAFETY: the tile's outputs are the caller's to write.
    unsafe { store_and_write(tile, &c) };
}

#[target_feature(enable = "avx512f")]
unsafe fn store_and_write<const R: usize>(tile: &Tile, c: &[[__m512; 3]; R]) {
    let mut acc = [[0.0f32; NR]; MR];
    for (r, row) in c.iter().enumerate() {
        for (v, &sum) in row.iter().enumerate() {
            // SAFETY: 16 f32 of the 48 in acc[r].
            unsafe { _mm512_storeu_ps(acc[r].as_mut_ptr().add(16 * v), sum) };
        }
    }
    // SAFETY: the tile's outputs are the caller's to write.
    unsafe { tile.write(&acc, R) };
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const R: usize>(tile: &Tile) {
    let mut c = [[_mm256_setzero_ps(); 6]; R];
    let b = tile.b.as_ptr();
    let high = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
    let odd = |v: __m256i| _mm256_castsi256_ps(_mm256_and_si256(v, high));
    let even = |v: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
    for p in 0..tile.pairs {
        // SAFETY: pair p of the panel is 192 bytes at p·192.
        let w = unsafe {
            [0, 1, 2, 3, 4, 5].map(|v| _mm256_loadu_si256(b.add(p * NR * 2 + 16 * v) as *const _))
        };
        for (r, row) in c.iter_mut().enumerate() {
            // SAFETY: r < R = rows.
            let a = _mm256_set1_epi32(unsafe { pair(tile, r, p) });
            let (a_odd, a_even) = (odd(a), even(a));
            for v in 0..6 {
                row[v] = _mm256_fmadd_ps(a_odd, odd(w[v]), row[v]);
                row[v] = _mm256_fmadd_ps(a_even, even(w[v]), row[v]);
            }
        }
    }
    let mut acc = [[0.0f32; NR]; MR];
    for (r, row) in c.iter().enumerate() {
        for (v, &sum) in row.iter().enumerate() {
            // SAFETY: 8 f32 of the 48 in acc[r].
            unsafe { _mm256_storeu_ps(acc[r].as_mut_ptr().add(8 * v), sum) };
        }
    }
    // SAFETY: the tile's outputs are the caller's to write.
    unsafe { tile.write(&acc, R) };
}
