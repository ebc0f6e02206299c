# Reference fits of R coxme for lesionatlas' MixedCox (tests/hazards/test_coxme_reference.py).
# Run from the repository root:  Rscript tests/reference/coxme/fit_coxme.R
# Inputs: <name>_input.csv written by make_inputs.py. Output: <name>_coxme.csv, one row per number.
suppressPackageStartupMessages({library(survival); library(coxme)})
here <- "tests/reference/coxme"
versions <- sprintf("R %s; survival %s; coxme %s; bdsmatrix %s", getRversion(),
                    packageVersion("survival"), packageVersion("coxme"), packageVersion("bdsmatrix"))
one_fit <- function(fit, label) {
  beta <- fixef(fit)
  se <- sqrt(diag(as.matrix(vcov(fit))))
  s2 <- unlist(VarCorr(fit))[[1]]
  ll <- fit$loglik
  rbind(
    data.frame(fit = label, quantity = "coef", term = names(beta), value = unname(beta)),
    data.frame(fit = label, quantity = "se", term = names(beta), value = unname(se)),
    data.frame(fit = label, quantity = c("variance", "loglik_null", "loglik_integrated", "loglik_penalized"),
               term = "", value = c(s2, ll[1], ll[2], ll[3])))
}
for (name in c("small", "medium")) {
  d <- read.csv(file.path(here, paste0(name, "_input.csv")))
  d$organ <- relevel(factor(d$organ), ref = "abdominal")
  out <- NULL
  for (ties in c("efron", "breslow")) {
    f <- coxme(Surv(day, event) ~ age_z + treated + organ + (1 | patient_id), data = d, ties = ties)
    s2 <- unlist(VarCorr(f))[[1]]
    # the same model with the variance fixed at 0.5 (objective at a given variance, no outer search)
    g <- coxme(Surv(day, event) ~ age_z + treated + organ + (1 | patient_id), data = d, ties = ties,
               vfixed = 0.5)
    out <- rbind(out, one_fit(f, paste0(ties, "_estimated")), one_fit(g, paste0(ties, "_fixed0.5")))
  }
  out$versions <- versions
  write.csv(out, file.path(here, paste0(name, "_coxme.csv")), row.names = FALSE)
}
