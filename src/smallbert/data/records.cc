// MindRecord blob rows, laid out as MindSpore 2.10's ShardWriter lays them out (its shard_column.cc CompressBlob
// and the blob page's row prefix), so that `records.write_mindrecord` can write the pages itself: MindSpore's own
// write_raw_data spends ~14 us a row on per-element vector allocations.
//
// Built by smallbert.native on first use; called through ctypes.
#include <cstdint>
#include <cstring>

namespace {

void put_big(uint8_t* out, uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) {
    out[i] = static_cast<uint8_t>(value & 0xFF);
    value >>= 8;
  }
}

void put_little(uint8_t* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    out[i] = static_cast<uint8_t>(value & 0xFF);
    value >>= 8;
  }
}

// MindRecord's integer compression of one int32 column: a 4-byte big-endian element count, a 2-bit width code
// per element (0: 1 byte, 1: 2 bytes, 2: 4 bytes; four to a byte, the first element in the high bits), then
// each element little-endian in the narrowest width that holds it. Returns the bytes written.
int64_t compress_int32(const int32_t* values, int64_t n, uint8_t* out) {
  put_big(out, static_cast<uint64_t>(n), 4);
  uint8_t* bitmap = out + 4;
  const int64_t bitmap_bytes = (n + 3) / 4;
  std::memset(bitmap, 0, bitmap_bytes);
  uint8_t* data = bitmap + bitmap_bytes;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = values[i];
    int code, bytes;
    if (v >= -128 && v <= 127) {
      code = 0, bytes = 1;
    } else if (v >= -32768 && v <= 32767) {
      code = 1, bytes = 2;
    } else {
      code = 2, bytes = 4;
    }
    put_little(data, static_cast<uint64_t>(v), bytes);
    data += bytes;
    bitmap[i / 4] |= static_cast<uint8_t>(code << (2 * (3 - i % 4)));
  }
  return data - out;
}

}  // namespace

extern "C" {

// Writes n_rows blob-page rows into `out` (sized by the caller for the worst case): per row, an 8-byte
// little-endian length of the rest, then per column (in the schema's blob-field order) an 8-byte big-endian
// length and the column's bytes, int32 columns (`is_int32[c]`) compressed. Every column has 4-byte elements,
// `widths[c]` of them a row, row-major at `columns[c]`. row_ends[r] is the offset just past row r.
// Returns the bytes the compression saved (MindRecord's header records it as compression_size).
int64_t sb_mindrecord_rows(int64_t n_rows, int32_t n_columns, const void* const* columns, const int64_t* widths,
                           const int32_t* is_int32, uint8_t* out, int64_t* row_ends) {
  int64_t offset = 0, saved = 0;
  for (int64_t r = 0; r < n_rows; ++r) {
    uint8_t* row = out + offset;
    uint8_t* cursor = row + 8;
    for (int32_t c = 0; c < n_columns; ++c) {
      const int64_t w = widths[c];
      const uint8_t* source = static_cast<const uint8_t*>(columns[c]) + 4 * w * r;
      int64_t length;
      if (is_int32[c]) {
        length = compress_int32(reinterpret_cast<const int32_t*>(source), w, cursor + 8);
        saved += 4 * w - length;
      } else {
        length = 4 * w;
        std::memcpy(cursor + 8, source, length);
      }
      put_big(cursor, static_cast<uint64_t>(length), 8);
      cursor += 8 + length;
    }
    put_little(row, static_cast<uint64_t>(cursor - row - 8), 8);
    offset = cursor - out;
    row_ends[r] = offset;
  }
  return saved;
}

}  // extern "C"
