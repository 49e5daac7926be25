//! The int8 tiles of `int8.rs` on x86: `vpdpbusd` (AVX512-VNNI, four products per 32-bit
//! lane in one instruction), else the same sums from `vpmaddwd` on bytes widened to 16 bits
//! (AVX-512BW, AVX2). `vpmaddwd` is exact where `vpmaddubsw` would saturate (2 · 255 · 127 >
//! 2¹⁵), so every level's sums equal the portable loop's.

use super::int8::Tile;
use super::{Level, MR, NR};
use std::arch::x86_64::*;

/// The tile's sums on `level`, written out.
///
/// # Safety
/// The processor has `level`'s instructions; `tile.a` holds `tile.rows` rows of
/// `4·tile.quads` bytes, `tile.stride` apart, `tile.b` one panel of `tile.quads` groups, and
/// the tile's outputs are the caller's to write.
pub(crate) unsafe fn run(tile: &Tile, level: Level) {
    debug_assert!(tile.rows >= 1 && tile.rows <= MR);
    debug_assert!(tile.a.len() >= (tile.rows - 1) * tile.stride + 4 * tile.quads);
    debug_assert!(tile.b.len() >= tile.quads * NR * 4);
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
            Level::Vnni => rows!(vnni),
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
            _ => unreachable!("{level:?} has no int8 kernel"),
        }
    }
}

/// Row r's four bytes of group q, as one 32-bit lane.
#[inline(always)]
unsafe fn quad(tile: &Tile, r: usize, q: usize) -> i32 {
    // SAFETY: row r < rows and group q < quads lie within `tile.a` (the caller's promise).
    unsafe { (tile.a.as_ptr().add(r * tile.stride + 4 * q) as *const i32).read_unaligned() }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vnni<const R: usize>(tile: &Tile) {
    let mut c = [[_mm512_setzero_si512(); 3]; R];
    let b = tile.b.as_ptr();
    for q in 0..tile.quads {
        // SAFETY: group q of the panel is 192 bytes at q·192.
        let w = unsafe {
            [0, 1, 2].map(|v| _mm512_loadu_si512(b.add(q * NR * 4 + 64 * v) as *const _))
        };
        for (r, row) in c.iter_mut().enumerate() {
            // SAFETY: r < R = rows.
            let a = _mm512_set1_epi32(unsafe { quad(tile, r, q) });
            for v in 0..3 {
                row[v] = _mm512_dpbusd_epi32(row[v], a, w[v]);
            }
        }
    }
    // SAFETY: the tile's outputs are the caller's to write.
    unsafe { write_512(tile, &c) };
}

/// Sixteen 4-way dot products of unsigned `a` bytes and signed `w` bytes, from 16-bit
/// products: bytes 0 and 2 of each lane, then bytes 1 and 3.
#[inline(always)]
unsafe fn dot4_512(a_even: __m512i, a_odd: __m512i, w: __m512i) -> __m512i {
    let w_even = _mm512_srai_epi16::<8>(_mm512_slli_epi16::<8>(w));
    let w_odd = _mm512_srai_epi16::<8>(w);
    _mm512_add_epi32(_mm512_madd_epi16(a_even, w_even), _mm512_madd_epi16(a_odd, w_odd))
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn avx512<const R: usize>(tile: &Tile) {
    let mut c = [[_mm512_setzero_si512(); 3]; R];
    let b = tile.b.as_ptr();
    for q in 0..tile.quads {
        // SAFETY: as in `vnni`.
        let w = unsafe {
            [0, 1, 2].map(|v| _mm512_loadu_si512(b.add(q * NR * 4 + 64 * v) as *const _))
        };
        for (r, row) in c.iter_mut().enumerate() {
            // SAFETY: r < R = rows.
            let a = unsafe { quad(tile, r, q) } as u32;
            let even = _mm512_set1_epi32((a & 0x00FF_00FF) as i32);
            let odd = _mm512_set1_epi32(((a >> 8) & 0x00FF_00FF) as i32);
            for v in 0..3 {
                row[v] = _mm512_add_epi32(row[v], unsafe { dot4_512(even, odd, w[v]) });
            }
        }
    }
    // SAFETY: the tile's outputs are the caller's to write.
    unsafe { write_512(tile, &c) };
}

/// [`Tile::write`] in sixteen lanes, from the sums in registers: the same operations in the
/// same order (i32 to f32 rounds to nearest, as `as f32` does), so the same bits. Masked
/// loads and stores cover a last panel's missing columns (and the bias's end) without
/// touching them.
///
/// # Safety
/// The processor has AVX-512F; the tile's outputs are the caller's to write.
#[inline(always)]
unsafe fn write_512<const R: usize>(tile: &Tile, c: &[[__m512i; 3]; R]) {
    // Plain loops, not closures: a closure is compiled without the kernel's target features,
    // so its intrinsics would become calls.
    let (mut masks, mut sums) = ([0 as __mmask16; 3], [_mm512_setzero_si512(); 3]);
    let (mut scales, mut bias) = ([_mm512_setzero_ps(); 3], [_mm512_setzero_ps(); 3]);
    // SAFETY: the masks keep every load within the panel's columns (the scales, sums and bias
    // hold at least `columns` from their start) and every store within the tile's outputs.
    unsafe {
        for v in 0..3 {
            let live = tile.columns.saturating_sub(16 * v).min(16);
            masks[v] = ((1u32 << live) - 1) as __mmask16;
            sums[v] = _mm512_maskz_loadu_epi32(masks[v], tile.sums.as_ptr().add(16 * v));
            scales[v] = _mm512_maskz_loadu_ps(masks[v], tile.scales.as_ptr().add(16 * v));
            if let Some(b) = tile.bias {
                bias[v] = _mm512_maskz_loadu_ps(masks[v], b.as_ptr().add(16 * v));
            }
        }
        for (r, row) in c.iter().enumerate() {
            let zero = _mm512_set1_epi32(tile.row_zeros[r]);
            let row_scale = _mm512_set1_ps(tile.row_scales[r]);
            let out = tile.out.at(r * tile.n);
            for v in 0..3 {
                let exact = _mm512_sub_epi32(row[v], _mm512_mullo_epi32(zero, sums[v]));
                let (x, s) = (_mm512_cvtepi32_ps(exact), _mm512_mul_ps(row_scale, scales[v]));
                let y = match tile.bias {
                    Some(_) => _mm512_fmadd_ps(x, s, bias[v]),
                    None => _mm512_mul_ps(x, s),
                };
                _mm512_mask_storeu_ps(out.add(16 * v), masks[v], y);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const R: usize>(tile: &Tile) {
    let mut c = [[_mm256_setzero_si256(); 6]; R];
    let b = tile.b.as_ptr();
    for q in 0..tile.quads {
        // SAFETY: group q of the panel is 192 bytes at q·192.
        let w = unsafe {
            [0, 1, 2, 3, 4, 5].map(|v| _mm256_loadu_si256(b.add(q * NR * 4 + 32 * v) as *const _))
        };
        for (r, row) in c.iter_mut().enumerate() {
            // SAFETY: r < R = rows.
            let a = unsafe { quad(tile, r, q) } as u32;
            let even = _mm256_set1_epi32((a & 0x00FF_00FF) as i32);
            let odd = _mm256_set1_epi32(((a >> 8) & 0x00FF_00FF) as i32);
            for v in 0..6 {
                let w_even = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(w[v]));
                let w_odd = _mm256_srai_epi16::<8>(w[v]);
                let dot = _mm256_add_epi32(
                    _mm256_madd_epi16(even, w_even),
                    _mm256_madd_epi16(odd, w_odd),
                );
                row[v] = _mm256_add_epi32(row[v], dot);
            }
        }
    }
    let mut acc = [[0i32; NR]; MR];
    for (r, row) in c.iter().enumerate() {
        for (v, &sum) in row.iter().enumerate() {
            // SAFETY: 8 i32 of the 48 in acc[r].
            unsafe { _mm256_storeu_si256(acc[r].as_mut_ptr().add(8 * v) as *mut _, sum) };
        }
    }
    // SAFETY: the tile's outputs are the caller's to write.
    unsafe { tile.write(&acc, R) };
}
