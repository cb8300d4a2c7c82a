#!/usr/bin/env bash
# The dependency rule, checked from the #include lines (docs/ARCHITECTURE.md, "Where things live"):
#
#   cli -> train -> {lora, dpo} -> model -> {backend, io, datasets} -> base
#
# A file may include headers of its own layer and of the layers below it; layers side by side (backend, io,
# datasets; lora, dpo) do not include one another. Every quoted include names its path from the repository top
# (the one include root), so it must exist there. The model never includes a dataset reader. tests/ and bench/ stand above everything and are not checked.
#
#   bash tests/layering.sh [ROOT]     check the tree at ROOT (default: the repository)
#   bash tests/layering.sh --self-test   also prove that a back-up include and a bare include are caught
set -euo pipefail

# layer of a path from the repository top: "rank name", or nothing for a path outside the layers
layer_of() {
  case "$1" in
    finetune/base/*) echo "0 base" ;;
    finetune/backend/*) echo "1 backend" ;;
    finetune/io/*) echo "1 io" ;;
    datasets/*) echo "1 datasets" ;;
    finetune/model/*) echo "2 model" ;;
    lora/*) echo "3 lora" ;;
    dpo/*) echo "3 dpo" ;;
    finetune/train/*) echo "4 train" ;;
    finetune/cli/*) echo "5 cli" ;;
    *) ;;
  esac
}

check_tree() {
  local root=$1 bad=0 files=0 includes=0
  while IFS= read -r file; do
    files=$((files + 1))
    local rel=${file#"$root"/} from
    from=$(layer_of "$rel")
    if [ -z "$from" ]; then
      echo "layering: $rel: not inside a layer folder (finetune/{base,backend,io,model,train,cli}, datasets, lora, dpo)"
      bad=1
      continue
    fi
    while IFS=: read -r line inc; do
      includes=$((includes + 1))
      if [ ! -f "$root/$inc" ]; then
        echo "layering: $rel:$line: #include \"$inc\" does not name a file from the repository top"
        bad=1
        continue
      fi
      local to
      to=$(layer_of "$inc")
      if [ -z "$to" ]; then
        echo "layering: $rel:$line: #include \"$inc\" is outside the layers"
        bad=1
        continue
      fi
      local fr=${from%% *} fn=${from#* } tr=${to%% *} tn=${to#* }
      if [ "$tr" -gt "$fr" ] || { [ "$tr" -eq "$fr" ] && [ "$tn" != "$fn" ]; }; then
        echo "layering: $rel:$line: $fn includes \"$inc\" ($tn): includes must point down (cli -> train -> {lora, dpo} -> model -> {backend, io, datasets} -> base)"
        bad=1
      elif [ "$fn" = model ] && case "$inc" in datasets/reader.h | datasets/dataset.h) true ;; *) false ;; esac; then
        echo "layering: $rel:$line: the model includes the dataset reader \"$inc\": it takes token ids, not files"
        bad=1
      fi
    done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" | sed 's/^\([0-9]*\):[^"]*"\([^"]*\)".*/\1:\2/')
  done < <(find "$root/finetune" "$root/lora" "$root/dpo" "$root/datasets" -type f \
             \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) 2>/dev/null | sort)
  if [ "$files" -eq 0 ]; then
    echo "layering: no sources found under $root"
    return 1
  fi
  echo "layering: $files files, $includes quoted includes checked"
  return $bad
}

if [ "${1:-}" = "--self-test" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/finetune/base" "$tmp/finetune/model" "$tmp/finetune/backend" "$tmp/finetune/cli" "$tmp/lora" \
           "$tmp/dpo" "$tmp/datasets"
  printf '#include <stdio.h>\n' > "$tmp/finetune/base/util.h"
  printf '#include "finetune/base/util.h"\n' > "$tmp/finetune/model/model.h"
  printf '#include "finetune/model/model.h"\n' > "$tmp/lora/lora.h"
  printf '#include "lora/lora.h"\n' > "$tmp/finetune/cli/cli.h"
  printf '#include "finetune/base/util.h"\n' > "$tmp/finetune/backend/backend.h"
  printf '#include "finetune/base/util.h"\n' > "$tmp/datasets/reader.h"
  check_tree "$tmp" >/dev/null || { echo "layering self-test: a clean tree was refused"; check_tree "$tmp"; exit 1; }
  for case in 'finetune/backend/backend.h:finetune/model/model.h' 'finetune/model/model.c:lora/lora.h' \
              'dpo/dpo.h:lora/lora.h' 'datasets/reader.c:finetune/backend/backend.h' \
              'finetune/model/rope.c:util.h' 'finetune/base/tensor.c:finetune/cli/cli.h' \
              'finetune/model/model.c:datasets/reader.h'; do
    file=${case%%:*} inc=${case#*:}
    cp -r "$tmp" "$tmp.case"
    printf '#include "%s"\n' "$inc" >> "$tmp.case/$file"
    if check_tree "$tmp.case" >/dev/null; then
      rm -rf "$tmp.case"
      echo "layering self-test: '#include \"$inc\"' in $file was not caught"
      exit 1
    fi
    rm -rf "$tmp.case"
  done
  echo "layering self-test: every planted violation was caught"
  shift
fi

check_tree "${1:-$(cd "$(dirname "$0")/.." && pwd)}"
