# Frozen R references for tests/test_parity_r.py (issue 15): families, weights, offsets,
# robust covariances, deviance tests and prediction standard errors.
#   Rscript tests/data/make_glm_parity.R      (R >= 4.2, MASS, sandwich, statmod, jsonlite)
# Writes tests/data/glm_parity.csv (the simulated data, rounded to 6 decimals so the CSV is
# exact) and tests/data/glm_parity.json.  Every case holds the Python (Patsy) formula used
# by impactglm and the R formula; "tight" values use glm.control(epsilon = 1e-14,
# maxit = 100) so they are the MLE to ~1e-10; glm.nb cases use MASS's defaults, which
# impactglm reproduces iteration for iteration.
suppressMessages({library(MASS); library(sandwich); library(statmod); library(jsonlite)})
here <- tryCatch(dirname(normalizePath(sub("--file=", "", grep("--file=", commandArgs(FALSE), value = TRUE)))),
                 error = function(e) "tests/data")

set.seed(20261202)
n <- 400
d <- data.frame(x1 = round(rnorm(n), 6), x2 = round(runif(n), 6),
                k = sample(c("a", "b", "c", "d"), n, replace = TRUE),
                g = sprintf("g%02d", sample(1:25, n, replace = TRUE)),
                expo = round(runif(n, 0.5, 3), 6), w = sample(1:4, n, replace = TRUE),
                stringsAsFactors = FALSE)
keff <- c(a = 0, b = 0.3, c = -0.2, d = 0.5)[d$k]
mu_cnt <- d$expo * exp(0.3 + 0.5 * d$x1 + keff)
d$cnt <- rnbinom(n, size = 2, mu = mu_cnt)
mu_ig <- 1 / sqrt(1 + 0.8 * d$x2 + 0.1 * (d$k == "b"))
d$ypos <- round(rinvgauss(n, mean = mu_ig, dispersion = 0.4), 6)
d$ypos[d$ypos <= 0] <- 1e-6
p <- 1.5; phi <- 1.2
mu_tw <- exp(0.2 + 0.4 * d$x1 - 0.3 * (d$k == "c"))
lam <- mu_tw^(2 - p) / (phi * (2 - p))
N <- rpois(n, lam)
d$ytw <- round(sapply(seq_len(n), function(i) if (N[i] == 0) 0 else
  sum(rgamma(N[i], shape = (2 - p) / (p - 1), scale = phi * (p - 1) * mu_tw[i]^(p - 1)))), 6)
d$ybin <- as.integer(runif(n) < pnorm(-0.2 + 0.6 * d$x1 + 0.4 * d$x2))
d$trials <- sample(1:6, n, replace = TRUE)
d$prop <- rbinom(n, d$trials, plogis(0.1 + 0.5 * d$x1)) / d$trials
d$ygauss_inv <- round(1 / (1 + 0.5 * d$x2 + 0.2 * (d$k == "d")) + rnorm(n, sd = 0.05), 6)
write.csv(d, file.path(here, "glm_parity.csv"), row.names = FALSE)
d <- read.csv(file.path(here, "glm_parity.csv"), stringsAsFactors = FALSE)

tight <- glm.control(epsilon = 1e-14, maxit = 100)

# R's summary.glm estimates a dispersion for negative.binomial(theta) fits; MASS's
# summary.negbin and statsmodels' NegativeBinomial(alpha) fix it at 1 (so does impactglm)
basic <- function(fit) {
  s <- if (grepl("^Negative Binomial", fit$family$family)) summary(fit, dispersion = 1) else summary(fit)
  list(coef_names = names(coef(fit)), coef = unname(coef(fit)),
       se = unname(s$coefficients[, 2]), deviance = deviance(fit),
       null_deviance = fit$null.deviance, df_residual = fit$df.residual,
       dispersion = s$dispersion,
       aic = if (is.na(AIC(fit))) NULL else AIC(fit),
       loglik = if (is.na(AIC(fit))) NULL else as.numeric(logLik(fit)),
       resid_deviance = unname(residuals(fit, "deviance")[1:8]),
       resid_pearson = unname(residuals(fit, "pearson")[1:8]),
       fitted = unname(fitted(fit)[1:8]))
}

fam_cases <- list(
  list(name = "invgauss_inverse_squared", py = "ypos ~ x2 + C(k)", r = "ypos ~ x2 + k",
       family = "inverse_gaussian", link = "inverse_squared", fam = inverse.gaussian("1/mu^2")),
  list(name = "invgauss_log", py = "ypos ~ x2 + C(k)", r = "ypos ~ x2 + k",
       family = "inverse_gaussian", link = "log", fam = inverse.gaussian("log")),
  list(name = "invgauss_identity", py = "ypos ~ x2", r = "ypos ~ x2",
       family = "inverse_gaussian", link = "identity", fam = inverse.gaussian("identity")),
  list(name = "tweedie_log", py = "ytw ~ x1 + C(k)", r = "ytw ~ x1 + k", family = "tweedie",
       link = "log", var_power = 1.5, fam = tweedie(var.power = 1.5, link.power = 0)),
  list(name = "tweedie_log_p13_weights", py = "ytw ~ x1 + x2", r = "ytw ~ x1 + x2",
       family = "tweedie", link = "log", var_power = 1.3, weights = "w",
       fam = tweedie(var.power = 1.3, link.power = 0)),
  list(name = "quasipoisson", py = "cnt ~ x1 + C(k)", r = "cnt ~ x1 + k", family = "quasipoisson",
       link = "log", offset = "logexpo", fam = quasipoisson()),
  list(name = "quasibinomial_trials", py = "prop ~ x1 + x2", r = "prop ~ x1 + x2",
       family = "quasibinomial", link = "logit", weights = "trials", fam = quasibinomial()),
  list(name = "gaussian_inverse", py = "ygauss_inv ~ x2 + C(k)", r = "ygauss_inv ~ x2 + k",
       family = "gaussian", link = "inverse", fam = gaussian("inverse")),
  list(name = "negbin_fixed_theta", py = "cnt ~ x1 + C(k)", r = "cnt ~ x1 + k",
       family = "negative_binomial", link = "log", theta = 1.7, offset = "logexpo",
       fam = negative.binomial(theta = 1.7)),
  list(name = "negbin_fixed_theta_weights", py = "cnt ~ x1", r = "cnt ~ x1",
       family = "negative_binomial", link = "log", theta = 0.8, weights = "w",
       fam = negative.binomial(theta = 0.8))
)
d$logexpo <- log(d$expo)       # the tests compute it as np.log(expo)
newrows <- d[c(1, 7, 50, 123, 399), ]

fit_case <- function(cs, control = tight) {
  args <- list(formula = as.formula(cs$r), data = d, family = cs$fam, control = control)
  if (!is.null(cs$weights)) args$weights <- d[[cs$weights]]
  if (!is.null(cs$offset)) args$offset <- d[[cs$offset]]
  do.call(glm, args)
}

families_out <- lapply(fam_cases, function(cs) {
  fit <- fit_case(cs)
  fit0 <- fit_case(cs, glm.control())
  c(cs[setdiff(names(cs), "fam")], basic(fit),
    list(default = list(coef = unname(coef(fit0)), iter = fit0$iter, deviance = deviance(fit0))))
})

# MASS::glm.nb at its defaults (theta estimated), with an offset term and with weights
nb_cases <- list(
  list(name = "glmnb_offset", py = "cnt ~ x1 + C(k) + offset(np.log(expo))",
       r = "cnt ~ x1 + k + offset(log(expo))"),
  list(name = "glmnb_weights", py = "cnt ~ x1 + x2", r = "cnt ~ x1 + x2", weights = "w")
)
nb_out <- lapply(nb_cases, function(cs) {
  args <- list(formula = as.formula(cs$r), data = d)
  if (!is.null(cs$weights)) args$weights <- d[[cs$weights]]
  fit <- do.call(glm.nb, args)
  c(cs, basic(fit), list(theta = fit$theta, theta_se = fit$SE.theta,
                         twologlik = fit$twologlik, aic_nb = fit$aic))
})

# sandwich: HC0-HC3 and cluster with statsmodels' corrections, vcovCL(type = "HC1"):
# G/(G-1) (n-1)/(n-p) (vcovCL's default for glm is HC0 with G/(G-1) only)
sw_cases <- list(
  list(name = "poisson_log", py = "cnt ~ x1 + C(k)", r = "cnt ~ x1 + k", family = "poisson",
       link = "log", fam = poisson()),
  list(name = "binomial_probit", py = "ybin ~ x1 + x2", r = "ybin ~ x1 + x2",
       family = "binomial", link = "probit", fam = binomial("probit")),
  list(name = "gamma_log_weights", py = "ypos ~ x1 + x2", r = "ypos ~ x1 + x2", family = "gamma",
       link = "log", weights = "w", fam = Gamma("log"))
)
sw_out <- lapply(sw_cases, function(cs) {
  fit <- fit_case(cs)
  v <- function(m) unname(sqrt(diag(m)))
  c(cs[setdiff(names(cs), "fam")],
    list(coef_names = names(coef(fit)), se = v(vcov(fit)),
         HC0 = v(vcovHC(fit, "HC0")), HC1 = v(vcovHC(fit, "HC1")),
         HC2 = v(vcovHC(fit, "HC2")), HC3 = v(vcovHC(fit, "HC3")),
         cluster = v(vcovCL(fit, cluster = ~g, type = "HC1")),
         HC0_cov = unname(vcovHC(fit, "HC0")), cluster_cov = unname(vcovCL(fit, cluster = ~g, type = "HC1"))))
})

# anova.glm between nested fits
an_cases <- list(
  list(name = "poisson_chisq", py = c("cnt ~ x1", "cnt ~ x1 + C(k)", "cnt ~ x1 + C(k) + x2"),
       r = c("cnt ~ x1", "cnt ~ x1 + k", "cnt ~ x1 + k + x2"), family = "poisson", link = "log",
       test = "Chisq", fam = poisson()),
  list(name = "quasipoisson_f", py = c("cnt ~ x1", "cnt ~ x1 + C(k)"), r = c("cnt ~ x1", "cnt ~ x1 + k"),
       family = "quasipoisson", link = "log", test = "F", fam = quasipoisson()),
  list(name = "gamma_chisq", py = c("ypos ~ x1", "ypos ~ x1 + x2 + C(k)"),
       r = c("ypos ~ x1", "ypos ~ x1 + x2 + k"), family = "gamma", link = "log", test = "Chisq",
       fam = Gamma("log"))
)
an_out <- lapply(an_cases, function(cs) {
  fits <- lapply(cs$r, function(f) glm(as.formula(f), data = d, family = cs$fam, control = tight))
  a <- do.call(anova, c(fits, list(test = cs$test)))
  pcol <- if (cs$test == "F") "Pr(>F)" else "Pr(>Chi)"
  c(cs[setdiff(names(cs), "fam")],
    list(resid_df = a[["Resid. Df"]], resid_dev = a[["Resid. Dev"]], df = a[["Df"]][-1],
         deviance = a[["Deviance"]][-1], pvalue = a[[pcol]][-1],
         F = if (cs$test == "F") a[["F"]][-1] else NULL))
})

# predict.glm(se.fit = TRUE) on new rows, link and response scales
pr_cases <- list(
  list(name = "binomial_logit", py = "ybin ~ x1 + x2 + C(k)", r = "ybin ~ x1 + x2 + k",
       family = "binomial", link = "logit", fam = binomial()),
  list(name = "poisson_offset", py = "cnt ~ x1 + C(k)", r = "cnt ~ x1 + k", family = "poisson",
       link = "log", offset = "logexpo", fam = poisson()),
  list(name = "gamma_inverse", py = "ypos ~ x2", r = "ypos ~ x2", family = "gamma",
       link = "inverse", fam = Gamma("inverse"))
)
pr_out <- lapply(pr_cases, function(cs) {
  args <- list(formula = as.formula(cs$r), data = d, family = cs$fam, control = tight)
  if (!is.null(cs$offset)) args$formula <- update(args$formula, . ~ . + offset(logexpo))
  fit <- do.call(glm, args)
  pl <- predict(fit, newrows, type = "link", se.fit = TRUE)
  pm <- predict(fit, newrows, type = "response", se.fit = TRUE)
  c(cs[setdiff(names(cs), "fam")],
    list(rows = c(1, 7, 50, 123, 399) - 1, fit_link = unname(pl$fit), se_link = unname(pl$se.fit),
         fit_mean = unname(pm$fit), se_mean = unname(pm$se.fit)))
})

ref <- list(r_version = R.version.string,
            packages = list(MASS = as.character(packageVersion("MASS")),
                            sandwich = as.character(packageVersion("sandwich")),
                            statmod = as.character(packageVersion("statmod"))),
            families = families_out, glmnb = nb_out, sandwich = sw_out, anova = an_out,
            predict = pr_out)
writeLines(toJSON(ref, auto_unbox = TRUE, digits = I(17), pretty = TRUE, na = "null", null = "null"),
           file.path(here, "glm_parity.json"))
