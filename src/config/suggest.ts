/*
 * "Did you mean": the known name a misspelt one was most likely meant to be. Shared by config.json keys and
 * settings-document fields, so that both answer a typo the same way.
 */

/**
 * The known name closest to `name` when it is a plausible typo of it: the same letters in another case, or
 * within two edits (one for names of five letters or fewer, where two edits make another word). Ties go to
 * the name listed first.
 */
export function closestName(name: string, known: Iterable<string>): string | undefined {
  const folded = name.toLowerCase();
  let best: { name: string; distance: number } | undefined;
  for (const candidate of known) {
    const distance = editDistance(folded, candidate.toLowerCase());
    const allowed = Math.min(candidate.length, name.length) <= 5 ? 1 : 2;
    if (distance <= allowed && (best === undefined || distance < best.distance)) {
      best = { name: candidate, distance };
    }
  }
  return best?.name;
}

/** Levenshtein distance with adjacent transpositions (optimal string alignment): `dyrrun` is one edit away. */
export function editDistance(a: string, b: string): number {
  // Rows i-2, i-1 and i of the distance table.
  let older: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let distance = Math.min(
        (previous[j] ?? 0) + 1,
        (current[j - 1] ?? 0) + 1,
        (previous[j - 1] ?? 0) + cost,
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        distance = Math.min(distance, (older[j - 2] ?? 0) + 1);
      }
      current.push(distance);
    }
    older = previous;
    previous = current;
  }
  return previous[b.length] ?? 0;
}
