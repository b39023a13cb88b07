# Extra lme4 1.1-31 references for tests/test_lmm.py, written to lme4_lmm_extra.json:
#  * "tight": the LMM cases of lme4.json refitted with nloptwrap at much tighter tolerances
#    (lme4's default stopping rule leaves Penicillin's theta ~1e-4 short of the optimum);
#  * "condvar": conditional SDs of the random effects (ranef(condVar = TRUE)), first 5 levels;
#  * "weighted": a weighted fit (prior weights) of sleepstudy;
#  * "toy": crossed + correlated slopes, three correlated terms, (x || a), nested (1 | a/b)
#    on lmm_toy.csv (simulated by tests/test_lmm.py's _toy(), rounded to 6 digits).
#   cd tests/data && Rscript make_lme4_lmm_extra.R > lme4_lmm_extra.json
suppressMessages(library(lme4))
tight <- lmerControl(optimizer = "nloptwrap",
                     optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 1e-12,
                                    ftol_rel = 1e-15, maxeval = 1e5))
ss <- read.csv("sleepstudy.csv"); ss$Subject <- factor(ss$Subject)
ds <- read.csv("Dyestuff.csv"); pen <- read.csv("Penicillin.csv")
toy <- read.csv("lmm_toy.csv"); toy$a <- factor(toy$a); toy$b <- factor(toy$b)  # made by tests/test_lmm.py's _toy()
one <- function(m) {
  fe <- fixef(m); se <- sqrt(diag(as.matrix(vcov(m))))
  re <- ranef(m, condVar = TRUE)
  cv <- lapply(names(re), function(g) tryCatch({
    r <- re[[g]]; pv <- attr(r, "postVar")
    sds <- sapply(seq_len(ncol(r)), function(j) sqrt(pv[j, j, ]))
    sds <- matrix(sds, ncol = ncol(r)); colnames(sds) <- colnames(r)
    lapply(setNames(seq_len(ncol(r)), colnames(r)), function(j)
      list(level = rownames(r)[1:5], blup = r[1:5, j], condsd = sds[1:5, j]))
  }, error = function(e) NULL))   # (x || g) terms: postVar is a list; no condsd reference
  names(cv) <- names(re)
  list(theta = as.list(getME(m, "theta")),
       fixed_effects = as.list(fe), se = as.list(se), sigma = sigma(m),
       criterion = if (isREML(m)) REMLcrit(m) else deviance(m),
       deviance_ML = -2 * as.numeric(logLik(refitML(m))), condvar = cv)
}
out <- list(
  tight = list(
    sleepstudy_ri_reml = one(lmer(Reaction ~ Days + (1 | Subject), ss, REML = TRUE, control = tight)),
    sleepstudy_ri_ml   = one(lmer(Reaction ~ Days + (1 | Subject), ss, REML = FALSE, control = tight)),
    sleepstudy_rs_reml = one(lmer(Reaction ~ Days + (Days | Subject), ss, REML = TRUE, control = tight)),
    dyestuff_reml      = one(lmer(Yield ~ 1 + (1 | Batch), ds, REML = TRUE, control = tight)),
    penicillin_reml    = one(lmer(diameter ~ 1 + (1 | plate) + (1 | sample), pen, REML = TRUE, control = tight))),
  weighted = list(
    sleepstudy_w_reml = one(lmer(Reaction ~ Days + (Days | Subject), ss, REML = TRUE,
                                 weights = 1 + (Days %% 3), control = tight)),
    sleepstudy_w_ml   = one(lmer(Reaction ~ Days + (1 | Subject), ss, REML = FALSE,
                                 weights = 1 + (Days %% 3), control = tight))),
  toy = list(
    crossed_slopes = one(lmer(y ~ x + (1 | b) + (x | a), toy, REML = TRUE, control = tight)),
    three_slopes   = one(lmer(y ~ x + (x + x2 | a), toy, REML = TRUE, control = tight)),
    uncorrelated   = one(lmer(y ~ x + (x || a), toy, REML = TRUE, control = tight)),
    nested         = one(lmer(y ~ x + (1 | a/b), toy, REML = TRUE, control = tight)),
    nested_ml      = one(lmer(y ~ x + (1 | a/b), toy, REML = FALSE, control = tight))),
  about = paste("lme4", packageVersion("lme4"), R.version.string,
                "; weights = 1 + (Days %% 3); deviance_ML = -2 logLik of refitML(fit)"))
cat(jsonlite::toJSON(out, auto_unbox = TRUE, digits = 15, pretty = TRUE))
