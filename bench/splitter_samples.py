"""Code samples for bench/splitter_parity.py: one template per language v0 splits by syntax.

Each template is one unit of code (a function, a class, a section) in which ``@K@`` is
replaced by the unit's number and ``@M@`` by a number derived from it; a sample is a header
and several units with varying gaps, so that it is larger than a chunk and has boundaries at
several depths (top-level items, statements, comments, blank lines).  Generated, not copied
from anywhere, so the samples need nothing outside the repository.
"""

from __future__ import annotations

_TEMPLATES: dict[str, tuple[str, str]] = {
    "c": (
        "#include <stdio.h>\n#include <stdlib.h>\n\n/* Sample module. */\n",
        "/* Compute the weighted total of series @K@. */\n"
        "static int compute_@K@(const int *values, size_t n) {\n"
        "    int total = 0;\n    for (size_t i = 0; i < n; i++) {\n"
        "        total += values[i] * @M@;\n    }\n\n"
        "    if (total > 100) {\n        return total - @K@;\n    }\n"
        '    printf("series @K@: %d\\n", total);\n    return total;\n}\n',
    ),
    "cpp": (
        "#include <vector>\n#include <string>\n\nnamespace sample {\n",
        "// A worker for queue @K@.\nclass Worker@K@ {\n public:\n"
        "  explicit Worker@K@(int weight) : weight_(weight) {}\n\n"
        "  template <typename T> T run(const std::vector<T>& values) const {\n"
        "    T total{};\n    for (const auto& v : values) { total += v * weight_; }\n"
        "    return total + static_cast<T>(@M@);\n  }\n\n private:\n  int weight_;\n};\n",
    ),
    "csharp": (
        "using System;\nusing System.Collections.Generic;\n\nnamespace Sample;\n",
        "/// <summary>Handles orders of region @K@.</summary>\npublic class Region@K@Handler\n{\n"
        "    private readonly int _weight = @M@;\n\n"
        "    public int Total(IEnumerable<int> values)\n    {\n        var total = 0;\n"
        "        foreach (var v in values)\n        {\n            total += v * _weight;\n"
        "        }\n        return total;\n    }\n}\n",
    ),
    "css": (
        ":root {\n  --accent: #336699;\n}\n",
        "/* Panel @K@ */\n.panel-@K@ {\n  margin: @M@px auto;\n  padding: 4px @K@px;\n"
        "  color: var(--accent);\n  border: 1px solid #ccc;\n}\n\n"
        ".panel-@K@ > .title:hover,\n.panel-@K@ > .title:focus {\n"
        "  font-weight: bold;\n  text-decoration: underline;\n}\n",
    ),
    "dtd": (
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        "<!-- Record type @K@ -->\n<!ELEMENT record@K@ (name, value@K@*, note?)>\n"
        '<!ATTLIST record@K@\n  id ID #REQUIRED\n  weight CDATA "@M@"\n'
        '  kind (a|b|c) "a">\n<!ELEMENT value@K@ (#PCDATA)>\n',
    ),
    "fortran": (
        "module sample\n  implicit none\ncontains\n",
        "  ! Weighted total number @K@\n  function total_@K@(values, n) result(total)\n"
        "    integer, intent(in) :: n\n    real, intent(in) :: values(n)\n"
        "    real :: total\n    integer :: i\n\n    total = 0.0\n    do i = 1, n\n"
        "      total = total + values(i) * @M@.0\n    end do\n  end function total_@K@\n",
    ),
    "go": (
        'package sample\n\nimport (\n\t"fmt"\n\t"strings"\n)\n',
        "// Compute@K@ sums the values of series @K@.\nfunc Compute@K@(values []int) int {\n"
        "\ttotal := 0\n\tfor _, v := range values {\n\t\ttotal += v * @M@\n\t}\n\n"
        "\tif total > 100 {\n\t\treturn total - @K@\n\t}\n"
        '\tfmt.Println(strings.Repeat("-", @K@))\n\treturn total\n}\n',
    ),
    "html": (
        "<!DOCTYPE html>\n<html>\n<head><title>Sample</title></head>\n<body>\n",
        '<section id="part-@K@">\n  <h2>Part @K@</h2>\n  <p>This part has @M@ items and a\n'
        '  <a href="/part/@K@">link</a>.</p>\n  <ul>\n    <li>first @K@</li>\n'
        "    <li>second @M@</li>\n  </ul>\n</section>\n",
    ),
    "java": (
        "package sample;\n\nimport java.util.List;\n",
        "/** Worker number @K@. */\nclass Worker@K@ {\n    private final int weight = @M@;\n\n"
        "    int run(List<Integer> values) {\n        int total = 0;\n"
        "        for (int v : values) {\n            total += v * weight;\n        }\n"
        "        return total - @K@;\n    }\n}\n",
    ),
    "javascript": (
        "'use strict';\n\nconst path = require('path');\n",
        "/**\n * Computes the summary of batch @K@.\n */\nfunction compute@K@(values) {\n"
        "  const total = values.reduce((a, b) => a + b, 0);\n\n"
        "  const label = `batch @K@: ${values.length} values`;\n"
        "  return { total: total * @M@, label, file: path.join('out', '@K@.json') };\n}\n",
    ),
    "json": ("", ""),  # built by _json_sample
    "kotlin": (
        "package sample\n\nimport kotlin.math.max\n",
        "/** Worker @K@. */\nclass Worker@K@(private val weight: Int = @M@) {\n"
        "    fun run(values: List<Int>): Int {\n        var total = 0\n"
        "        for (v in values) {\n            total += v * weight\n        }\n\n"
        "        return max(total, @K@)\n    }\n}\n",
    ),
    "pascal": (
        "program Sample;\n\nuses SysUtils;\n",
        "{ Total number @K@ }\nfunction Total@K@(const Values: array of Integer): Integer;\n"
        "var\n  I: Integer;\nbegin\n  Result := 0;\n  for I := Low(Values) to High(Values) do\n"
        "    Result := Result + Values[I] * @M@;\n\n  if Result > 100 then\n"
        "    Result := Result - @K@;\nend;\n",
    ),
    "php": (
        "<?php\n\nnamespace Sample;\n",
        "/**\n * Handler @K@.\n */\nclass Handler@K@\n{\n    private int $weight = @M@;\n\n"
        "    public function total(array $values): int\n    {\n        $total = 0;\n"
        "        foreach ($values as $v) {\n            $total += $v * $this->weight;\n"
        "        }\n        return $total - @K@;\n    }\n}\n",
    ),
    "python": (
        '"""Sample module."""\n\nfrom __future__ import annotations\n\nimport math\n',
        "def handler_@K@(event: dict[str, int], scale: float = @M@.0) -> dict[str, object]:\n"
        '    """Handle event @K@ and return a summary of it."""\n'
        "    total = sum(event.values()) * scale\n\n"
        "    # Round to the nearest multiple of @K@.\n"
        "    rounded = math.floor(total / @M@) * @M@\n"
        "    message = f'processed {len(event)} fields for @K@'\n"
        "    return {'total': rounded, 'message': message}\n",
    ),
    "r": (
        "library(stats)\n",
        "# Summary of sample @K@\nsummary_@K@ <- function(values, weight = @M@) {\n"
        "  total <- sum(values) * weight\n\n  if (total > 100) {\n    total <- total - @K@\n  }\n"
        "  list(total = total, mean = mean(values), n = length(values))\n}\n",
    ),
    "ruby": (
        "require 'json'\n\nmodule Sample\n",
        "  # Worker @K@.\n  class Worker@K@\n    WEIGHT = @M@\n\n    def run(values)\n"
        "      total = values.sum * WEIGHT\n      return total - @K@ if total > 100\n\n"
        '      { total: total, label: "worker @K@" }.to_json\n    end\n  end\n',
    ),
    "rust": (
        "use std::collections::HashMap;\n",
        "/// Computes the weighted total of series @K@.\n"
        "pub fn compute_@K@(values: &[i64]) -> i64 {\n"
        "    let base: i64 = values.iter().sum();\n\n"
        "    let scaled = base * @M@ + values.len() as i64;\n"
        "    let mut seen: HashMap<i64, usize> = HashMap::new();\n"
        "    for v in values {\n        *seen.entry(*v).or_default() += 1;\n    }\n"
        "    if scaled > 100 { scaled - @K@ } else { scaled + seen.len() as i64 }\n}\n",
    ),
    "scala": (
        "package sample\n\nimport scala.collection.mutable\n",
        "/** Worker @K@. */\nclass Worker@K@(weight: Int = @M@) {\n"
        "  def run(values: Seq[Int]): Int = {\n    val total = values.map(_ * weight).sum\n\n"
        "    if (total > 100) total - @K@ else total\n  }\n}\n",
    ),
    "solidity": (
        "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.0;\n",
        "/// Vault number @K@.\ncontract Vault@K@ {\n    uint256 public weight = @M@;\n"
        "    mapping(address => uint256) public balances;\n\n"
        "    function deposit() external payable {\n"
        "        balances[msg.sender] += msg.value * weight;\n    }\n\n"
        "    function total(address who) external view returns (uint256) {\n"
        "        return balances[who] + @K@;\n    }\n}\n",
    ),
    "sql": (
        "-- Sample schema.\n",
        "-- Table @K@\nCREATE TABLE items_@K@ (\n    id BIGINT PRIMARY KEY,\n"
        "    name TEXT NOT NULL,\n    weight INTEGER DEFAULT @M@\n);\n\n"
        "SELECT name, SUM(weight) AS total\nFROM items_@K@\nWHERE weight > @K@\n"
        "GROUP BY name\nORDER BY total DESC;\n",
    ),
    "swift": (
        "import Foundation\n",
        "/// Worker @K@.\nstruct Worker@K@ {\n    let weight: Int = @M@\n\n"
        "    func run(_ values: [Int]) -> Int {\n        var total = 0\n"
        "        for v in values {\n            total += v * weight\n        }\n"
        "        return total > 100 ? total - @K@ : total\n    }\n}\n",
    ),
    "toml": (
        '[package]\nname = "sample"\nversion = "0.1.0"\n',
        '# Server @K@\n[server_@K@]\nhost = "host-@K@.example.com"\nport = 80@M@\n\n'
        'timeout_seconds = @M@\nretries = @K@\nlabels = ["a@K@", "b@K@", "c@M@"]\n\n'
        "[server_@K@.tls]\nenabled = true\n",
    ),
    "tsx": (
        "import React from 'react';\n",
        "/** Panel @K@. */\nexport function Panel@K@(props: { items: string[] }): JSX.Element {\n"
        "  const count: number = props.items.length + @M@;\n\n"
        '  return (\n    <div className="panel-@K@">\n'
        "      {props.items.join(', ')} ({count})\n    </div>\n  );\n}\n",
    ),
    "typescript": (
        "import { readFileSync } from 'fs';\n",
        "/** Summary of batch @K@. */\n"
        "export function compute@K@(values: number[]): { total: number; label: string } {\n"
        "  const total: number = values.reduce((a, b) => a + b, 0);\n\n"
        "  if (total > 100) {\n    return { total: total - @K@, label: 'big' };\n  }\n"
        "  return { total: total * @M@, label: `run @K@` };\n}\n",
    ),
    "xml": (
        '<?xml version="1.0" encoding="UTF-8"?>\n<catalog>\n',
        '  <!-- Book @K@ -->\n  <book id="bk@K@" weight="@M@">\n'
        "    <author>Author @K@</author>\n    <title>Title number @M@</title>\n"
        "    <price>@K@.95</price>\n    <description>A book about item @K@,\n"
        "      with a second line.</description>\n  </book>\n",
    ),
    "yaml": (
        "version: 2\n",
        "# Service @K@\nservice_@K@:\n  image: registry.example.com/service-@K@:latest\n"
        "  replicas: @M@\n\n  env:\n    LOG_LEVEL: debug\n    WORKER_ID: worker-@K@\n"
        "  ports: [80@K@, 90@M@]\n",
    ),
}

_FOOTERS = {
    "cpp": "}  // namespace sample\n",
    "fortran": "end module sample\n",
    "html": "</body>\n</html>\n",
    "pascal": "begin\n  WriteLn('done');\nend.\n",
    "ruby": "end\n",
    "xml": "</catalog>\n",
}

# Units per sample: a small file (a couple of chunks) and a larger one.
_SIZES = (5, 14)


def _unit(template: str, k: int) -> str:
    return template.replace("@K@", str(k)).replace("@M@", str(k * 7 % 13 + 2))


def _json_sample(units: int) -> str:
    items = [
        f'  "service_{k}": {{\n    "image": "registry.example.com/service-{k}:latest",\n'
        f'    "replicas": {k % 5 + 1},\n'
        f'    "env": {{"LOG_LEVEL": "debug", "WORKER": "w-{k}"}},\n'
        f'    "ports": [{8000 + k}, {9000 + k}]\n  }}'
        for k in range(units * 2)
    ]
    return "{\n" + ",\n".join(items) + "\n}\n"


def code_samples() -> list[tuple[str, str, str]]:
    """``(language, name, text)`` for every template and size, in a fixed order."""
    samples = []
    for language, (header, template) in _TEMPLATES.items():
        for units in _SIZES:
            if language == "json":
                text = _json_sample(units)
            else:
                # Gaps between units vary: one blank line, two, none.
                gaps = ("\n", "\n\n", "")
                body = "".join(_unit(template, k) + gaps[k % len(gaps)] for k in range(units))
                text = header + "\n" + body + _FOOTERS.get(language, "")
            samples.append((language, f"generated-{language}-{units}", text))
    return samples
