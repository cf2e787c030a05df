/** A health or readiness answer: ok, or the reasons it is not. */
export interface Check {
  ok: boolean;
  reasons: string[];
}
