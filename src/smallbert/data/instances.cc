// Google's pretraining instances (create_pretraining_data.py) in C++, drawing from Python's own random.Random state:
// the same MT19937 words, consumed by the same primitives (random(), _randbelow via getrandbits, shuffle, randint)
// in the same order as smallbert/data/instances.py, so the instances and the generator's final state are those of
// the Python code. Called through ctypes (see instances.py); all arrays are C-contiguous.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// CPython's Modules/_randommodule.c generator; state = 624 words + the index of the next word (Random.getstate()).
struct Mt19937 {
  uint32_t mt[624];
  uint32_t index;

  uint32_t Next() {
    constexpr int N = 624, M = 397;
    constexpr uint32_t kMatrixA = 0x9908b0dfU, kUpper = 0x80000000U, kLower = 0x7fffffffU;
    if (index >= N) {
      int kk = 0;
      uint32_t y;
      for (; kk < N - M; ++kk) {
        y = (mt[kk] & kUpper) | (mt[kk + 1] & kLower);
        mt[kk] = mt[kk + M] ^ (y >> 1) ^ ((y & 1U) ? kMatrixA : 0U);
      }
      for (; kk < N - 1; ++kk) {
        y = (mt[kk] & kUpper) | (mt[kk + 1] & kLower);
        mt[kk] = mt[kk + (M - N)] ^ (y >> 1) ^ ((y & 1U) ? kMatrixA : 0U);
      }
      y = (mt[N - 1] & kUpper) | (mt[0] & kLower);
      mt[N - 1] = mt[M - 1] ^ (y >> 1) ^ ((y & 1U) ? kMatrixA : 0U);
      index = 0;
    }
    uint32_t y = mt[index++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= (y >> 18);
    return y;
  }

  // random.random(): 53 bits from two words.
  double Random() {
    uint32_t a = Next() >> 5, b = Next() >> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
  }

  // Random._randbelow_with_getrandbits(n) for 0 < n < 2**32: getrandbits(n.bit_length()) until below n.
  uint32_t Below(uint64_t n) {
    int k = 64 - __builtin_clzll(n);
    uint32_t r = Next() >> (32 - k);
    while (r >= n) r = Next() >> (32 - k);
    return r;
  }

  // random.randint(a, b).
  int64_t RandInt(int64_t a, int64_t b) { return a + Below(static_cast<uint64_t>(b - a + 1)); }

  // random.shuffle(items).
  template <typename T>
  void Shuffle(T *items, int64_t n) {
    for (int64_t i = n - 1; i > 0; --i) {
      int64_t j = Below(static_cast<uint64_t>(i + 1));
      T t = items[i];
      items[i] = items[j];
      items[j] = t;
    }
  }
};

constexpr int32_t kWordContinuation = 1 << 24;  // instances.WORD_CONTINUATION

struct Options {
  int64_t max_seq_length, max_predictions_per_seq, dupe_factor, do_whole_word_mask, dynamic_masking;
  double masked_lm_prob, short_seq_prob;
  int32_t cls, sep, mask;
  const int32_t *words;
  int64_t num_words;
  const uint8_t *continuation;  // continuation[id] != 0: a "##" piece
  int64_t continuation_size;
};

// All instances, concatenated; instance k's tokens are tokens[token_start[k] : token_start[k + 1]], likewise its
// masked positions and labels (labels keep the WORD_CONTINUATION marks; packing removes them).
struct Instances {
  std::vector<int32_t> tokens, positions, labels, b_start;
  std::vector<int64_t> token_start{0}, masked_start{0};
  std::vector<uint8_t> is_random_next;
};

class Builder {
 public:
  Builder(const Options &o, const int32_t *tokens, const int64_t *sentence_start, const int64_t *document_start,
          int64_t num_documents, Mt19937 *rng)
      : o_(o), tokens_(tokens), sentence_start_(sentence_start), document_start_(document_start),
        num_documents_(num_documents), rng_(*rng) {}

  // create_training_instances, after the documents are tokenized and the empty ones dropped.
  void Run() {
    order_.resize(num_documents_);
    for (int64_t d = 0; d < num_documents_; ++d) order_[d] = d;
    rng_.Shuffle(order_.data(), num_documents_);
    for (int64_t dupe = 0; dupe < o_.dupe_factor; ++dupe)
      for (int64_t d = 0; d < num_documents_; ++d) FromDocument(d);
    int64_t n = static_cast<int64_t>(out_.is_random_next.size());
    shuffled_.resize(n);
    for (int64_t k = 0; k < n; ++k) shuffled_[k] = k;
    rng_.Shuffle(shuffled_.data(), n);
  }

  Instances out_;
  std::vector<int64_t> shuffled_;  // the order of the final instance shuffle

 private:
  int64_t Sentences(int64_t d) const { return document_start_[order_[d] + 1] - document_start_[order_[d]]; }
  // Appends sentences [first, last) of (shuffled) document d to v.
  void Append(std::vector<int32_t> &v, int64_t d, int64_t first, int64_t last) const {
    int64_t s0 = document_start_[order_[d]];
    v.insert(v.end(), tokens_ + sentence_start_[s0 + first], tokens_ + sentence_start_[s0 + last]);
  }
  int64_t SentenceLength(int64_t d, int64_t s) const {
    int64_t s0 = document_start_[order_[d]] + s;
    return sentence_start_[s0 + 1] - sentence_start_[s0];
  }

  void FromDocument(int64_t d) {
    const int64_t num_sentences = Sentences(d), max_num_tokens = o_.max_seq_length - 3;
    int64_t target = max_num_tokens;
    if (rng_.Random() < o_.short_seq_prob) target = rng_.RandInt(2, max_num_tokens);
    int64_t chunk_start = 0, current_length = 0;
    for (int64_t i = 0; i < num_sentences; ++i) {
      current_length += SentenceLength(d, i);
      if (!(i == num_sentences - 1 || current_length >= target)) continue;
      const int64_t chunk = i - chunk_start + 1;
      int64_t a_end = chunk >= 2 ? rng_.RandInt(1, chunk - 1) : 1;
      a_.clear();
      b_.clear();
      Append(a_, d, chunk_start, chunk_start + a_end);
      bool random_next = chunk == 1 || rng_.Random() < 0.5;
      if (random_next) {
        int64_t target_b = target - static_cast<int64_t>(a_.size());
        int64_t other = 0;
        for (int attempt = 0; attempt < 10; ++attempt) {
          other = rng_.RandInt(0, num_documents_ - 1);
          if (other != d) break;
        }
        const int64_t other_sentences = Sentences(other);
        for (int64_t s = rng_.RandInt(0, other_sentences - 1); s < other_sentences; ++s) {
          Append(b_, other, s, s + 1);
          if (static_cast<int64_t>(b_.size()) >= target_b) break;
        }
        i -= chunk - a_end;  // put the unused sentences back
      } else {
        Append(b_, d, chunk_start + a_end, i + 1);
      }
      Emit(random_next);
      chunk_start = i + 1;
      current_length = 0;
    }
  }

  // truncate_seq_pair, [CLS] A [SEP] B [SEP], masking; appends the instance.
  void Emit(bool random_next) {
    int64_t a_lo = 0, a_hi = a_.size(), b_lo = 0, b_hi = b_.size();
    const int64_t max_num_tokens = o_.max_seq_length - 3;
    while ((a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens) {
      bool front = rng_.Random() < 0.5;
      if (a_hi - a_lo > b_hi - b_lo) {
        front ? ++a_lo : --a_hi;
      } else {
        front ? ++b_lo : --b_hi;
      }
    }
    std::vector<int32_t> &t = out_.tokens;
    const int64_t start = t.size();
    t.push_back(o_.cls);
    t.insert(t.end(), a_.begin() + a_lo, a_.begin() + a_hi);
    t.push_back(o_.sep);
    t.insert(t.end(), b_.begin() + b_lo, b_.begin() + b_hi);
    t.push_back(o_.sep);
    out_.token_start.push_back(t.size());
    out_.b_start.push_back(static_cast<int32_t>(a_hi - a_lo + 2));
    out_.is_random_next.push_back(random_next);
    if (!o_.dynamic_masking) Mask(start, static_cast<int64_t>(t.size()) - start);
    out_.masked_start.push_back(out_.positions.size());
  }

  bool Continues(int32_t token) const {
    return token >= kWordContinuation || (token >= 0 && token < o_.continuation_size && o_.continuation[token]);
  }

  // create_masked_lm_predictions on out_.tokens[start : start + length].
  void Mask(int64_t start, int64_t length) {
    int32_t *tokens = out_.tokens.data() + start;
    original_.assign(tokens, tokens + length);
    // Candidates: positions, or whole words as [first, end) of group_start_.
    candidates_.clear();
    group_start_.clear();
    for (int64_t i = 0; i < length; ++i) {
      int32_t token = tokens[i];
      if (token == o_.cls || token == o_.sep) continue;
      if (o_.do_whole_word_mask && !candidates_.empty() && Continues(token)) continue;  // joins the last word
      candidates_.push_back(static_cast<int32_t>(i));
    }
    const int64_t num_candidates = candidates_.size();
    if (o_.do_whole_word_mask) {
      // A word is its head and the continuation pieces that follow it, skipping [CLS]/[SEP] as the Python does.
      group_end_.resize(num_candidates);
      for (int64_t c = 0; c < num_candidates; ++c) {
        int64_t e = candidates_[c] + 1;
        while (e < length && (tokens[e] == o_.cls || tokens[e] == o_.sep || Continues(tokens[e]))) ++e;
        group_end_[c] = static_cast<int32_t>(e);
      }
      for (int64_t c = 0; c < num_candidates; ++c) group_start_.push_back(c);
      rng_.Shuffle(group_start_.data(), num_candidates);
    } else {
      rng_.Shuffle(candidates_.data(), num_candidates);
    }
    int64_t num_to_predict = static_cast<int64_t>(std::nearbyint(length * o_.masked_lm_prob));  // half to even
    if (num_to_predict < 1) num_to_predict = 1;
    if (num_to_predict > o_.max_predictions_per_seq) num_to_predict = o_.max_predictions_per_seq;
    masked_.clear();
    if (o_.do_whole_word_mask) {
      for (int64_t g = 0; g < num_candidates; ++g) {
        if (static_cast<int64_t>(masked_.size()) >= num_to_predict) break;
        int64_t head = candidates_[group_start_[g]], end = group_end_[group_start_[g]], size = 0;
        for (int64_t p = head; p < end; ++p) size += tokens[p] != o_.cls && tokens[p] != o_.sep;
        if (static_cast<int64_t>(masked_.size()) + size > num_to_predict) continue;
        for (int64_t p = head; p < end; ++p)
          if (tokens[p] != o_.cls && tokens[p] != o_.sep) masked_.push_back(static_cast<int32_t>(p));
      }
    } else {
      int64_t n = num_to_predict < num_candidates ? num_to_predict : num_candidates;
      masked_.assign(candidates_.begin(), candidates_.begin() + n);
    }
    for (int32_t index : masked_) {  // in candidate order: the draws come in Google's order
      if (rng_.Random() < 0.8) {
        tokens[index] = o_.mask;
      } else if (rng_.Random() < 0.5) {
        // 10%: keep the original token
      } else {
        tokens[index] = o_.words[rng_.RandInt(0, o_.num_words - 1)];
      }
    }
    std::vector<int32_t> sorted(masked_);
    std::sort(sorted.begin(), sorted.end());
    for (int32_t index : sorted) {
      out_.positions.push_back(index);
      out_.labels.push_back(original_[index]);
    }
  }

  const Options o_;
  const int32_t *tokens_;
  const int64_t *sentence_start_, *document_start_;
  const int64_t num_documents_;
  Mt19937 &rng_;
  std::vector<int64_t> order_;
  std::vector<int32_t> a_, b_, original_, candidates_, group_end_, masked_;
  std::vector<int64_t> group_start_;
};

struct Handle {
  Builder builder;
};

}  // namespace

extern "C" {

// Builds the instances; returns a handle for sb_pack (which frees it) and their number in *num_instances.
// int_options: max_seq_length, max_predictions_per_seq, dupe_factor, do_whole_word_mask, dynamic_masking.
// ids: cls, sep, mask. state: 625 words of Random.getstate()[1], advanced in place.
void *sb_create_instances(const int32_t *tokens, const int64_t *sentence_start, const int64_t *document_start,
                          int64_t num_documents, const int64_t *int_options, double masked_lm_prob,
                          double short_seq_prob, const int32_t *ids, const int32_t *words, int64_t num_words,
                          const uint8_t *continuation, int64_t continuation_size, uint32_t *state,
                          int64_t *num_instances) {
  Options o{int_options[0], int_options[1], int_options[2], int_options[3], int_options[4], masked_lm_prob,
            short_seq_prob, ids[0], ids[1], ids[2], words, num_words, continuation, continuation_size};
  Mt19937 rng;
  std::memcpy(rng.mt, state, sizeof(rng.mt));
  rng.index = state[624];
  auto *handle = new Handle{Builder(o, tokens, sentence_start, document_start, num_documents, &rng)};
  handle->builder.Run();
  std::memcpy(state, rng.mt, sizeof(rng.mt));
  state[624] = rng.index;
  *num_instances = static_cast<int64_t>(handle->builder.shuffled_.size());
  return handle;
}

// pack_instances in shuffled order into zeroed arrays: input_ids/input_mask/segment_ids [N, max_seq_length],
// masked_lm_positions/masked_lm_ids/masked_lm_weights [N, max_predictions_per_seq], next_sentence_labels [N].
// Frees the handle.
void sb_pack(void *opaque, int64_t max_seq_length, int64_t max_predictions_per_seq, int32_t *input_ids,
             int32_t *input_mask, int32_t *segment_ids, int32_t *positions, int32_t *masked_ids, float *weights,
             int32_t *next_sentence_labels) {
  auto *handle = static_cast<Handle *>(opaque);
  const Instances &in = handle->builder.out_;
  const std::vector<int64_t> &order = handle->builder.shuffled_;
  for (size_t row = 0; row < order.size(); ++row) {
    int64_t k = order[row];
    int64_t t0 = in.token_start[k], length = in.token_start[k + 1] - t0;
    int32_t *ids = input_ids + row * max_seq_length, *mask = input_mask + row * max_seq_length;
    int32_t *segments = segment_ids + row * max_seq_length;
    for (int64_t i = 0; i < length; ++i) {
      ids[i] = in.tokens[t0 + i] % kWordContinuation;
      mask[i] = 1;
      segments[i] = i >= in.b_start[k];
    }
    int64_t m0 = in.masked_start[k], count = in.masked_start[k + 1] - m0;
    for (int64_t j = 0; j < count; ++j) {
      positions[row * max_predictions_per_seq + j] = in.positions[m0 + j];
      masked_ids[row * max_predictions_per_seq + j] = in.labels[m0 + j] % kWordContinuation;
      weights[row * max_predictions_per_seq + j] = 1.0f;
    }
    next_sentence_labels[row] = in.is_random_next[k];
  }
  delete handle;
}

// Python's random primitives on a getstate() state, for the tests: kind 0 = random(), 1 = _randbelow(bound),
// 2 = shuffle(items[:count]) (items int64). Writes count draws (kinds 0, 1) to out.
void sb_draw(uint32_t *state, int kind, uint64_t bound, int64_t count, double *out, int64_t *items) {
  Mt19937 rng;
  std::memcpy(rng.mt, state, sizeof(rng.mt));
  rng.index = state[624];
  if (kind == 2) {
    rng.Shuffle(items, count);
  } else {
    for (int64_t k = 0; k < count; ++k) out[k] = kind == 0 ? rng.Random() : static_cast<double>(rng.Below(bound));
  }
  std::memcpy(state, rng.mt, sizeof(rng.mt));
  state[624] = rng.index;
}

}  // extern "C"
