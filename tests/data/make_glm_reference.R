# Frozen R glm() results for tests/test_glm.py.
#   python3 tests/data/make_glm_data.py && Rscript tests/data/make_glm_reference.R
# Each case carries the Python (Patsy) formula used by impactglm/statsmodels and the
# equivalent R formula; the test reads both from glm_reference.json.
# Main values are fitted with glm.control(epsilon = 1e-15) so that they are the MLE to
# ~1e-10 (at R's default epsilon = 1e-8, Fisher scoring with a non-canonical link stops
# ~1e-5 away from it); "default" holds coef/iter/deviance at R's default control, which
# impactglm's default settings must reproduce step for step.
library(jsonlite)
here <- tryCatch(dirname(normalizePath(sub("--file=", "", grep("--file=", commandArgs(FALSE), value = TRUE)))),
                 error = function(e) "tests/data")
frames <- list(glm_data.csv = read.csv(file.path(here, "glm_data.csv"), stringsAsFactors = FALSE),
               glm_boundary.csv = read.csv(file.path(here, "glm_boundary.csv")))

cases <- list(
  list(name = "gaussian_interactions", py = "y_gauss ~ x1 * C(k) + I(x2**2)",
       r = "y_gauss ~ x1 * k + I(x2^2)", family = "gaussian", link = "identity"),
  list(name = "gaussian_log", py = "y_gausslog ~ x1 + x2", r = "y_gausslog ~ x1 + x2",
       family = "gaussian", link = "log"),
  list(name = "gaussian_noint_weights", py = "y_gauss ~ 0 + C(k) + x1", r = "y_gauss ~ 0 + k + x1",
       family = "gaussian", link = "identity", weights = "w"),
  list(name = "binomial_logit", py = "y_logit ~ x1 + np.log(x3) + C(k)",
       r = "y_logit ~ x1 + log(x3) + k", family = "binomial", link = "logit"),
  list(name = "binomial_probit", py = "y_probit ~ x1 + x2", r = "y_probit ~ x1 + x2",
       family = "binomial", link = "probit"),
  list(name = "binomial_cloglog", py = "y_cloglog ~ x1 + np.log(x3)", r = "y_cloglog ~ x1 + log(x3)",
       family = "binomial", link = "cloglog"),
  list(name = "binomial_trials", py = "prop ~ x1 + C(k)", r = "prop ~ x1 + k",
       family = "binomial", link = "logit", weights = "trials"),
  list(name = "binomial_levels", py = "outcome ~ x1 + x2", r = "factor(outcome) ~ x1 + x2",
       family = "binomial", link = "logit"),
  list(name = "poisson_offset", py = "count ~ x1 + C(k)", r = "count ~ x1 + k",
       family = "poisson", link = "log", offset = "logexp"),
  list(name = "poisson_noint_weights", py = "count ~ x1 + np.log(x3) - 1",
       r = "count ~ x1 + log(x3) - 1", family = "poisson", link = "log", weights = "w",
       offset = "logexp"),
  list(name = "poisson_zero_weights", py = "count ~ x1 + C(k)", r = "count ~ x1 + k",
       family = "poisson", link = "log", weights = "w0"),
  list(name = "gamma_inverse", py = "y_gamma_inv ~ x3 + x1", r = "y_gamma_inv ~ x3 + x1",
       family = "gamma", link = "inverse"),
  list(name = "gamma_log_weights", py = "y_gamma_log ~ x1 + I(x2**2)", r = "y_gamma_log ~ x1 + I(x2^2)",
       family = "gamma", link = "log", weights = "w"),
  # maximum on the boundary: step halving on invalid mu, as glm.fit
  list(name = "binomial_log_boundary", py = "y_binomial_log ~ x_binomial_log",
       r = "y_binomial_log ~ x_binomial_log", family = "binomial", link = "log",
       data = "glm_boundary.csv"),
  list(name = "poisson_identity_boundary", py = "y_poisson_identity ~ x_poisson_identity",
       r = "y_poisson_identity ~ x_poisson_identity", family = "poisson", link = "identity",
       data = "glm_boundary.csv")
)

# Standard errors at the final coefficients (what impactglm reports; R's summary.glm uses
# the working weights of the last least-squares fit, i.e. of the previous iterate):
# phi (X'WX)^-1 with W = w mu.eta(eta)^2 / V(mu) at the fitted eta, phi = Pearson X^2 / df.
se_at_final <- function(fit) {
  X <- model.matrix(fit); fam <- fit$family; eta <- fit$linear.predictors; mu <- fit$fitted.values
  W <- fit$prior.weights * fam$mu.eta(eta)^2 / fam$variance(mu)
  disp <- if (fam$family %in% c("binomial", "poisson")) 1 else
    sum(fit$prior.weights * (fit$y - mu)^2 / fam$variance(mu)) / fit$df.residual
  sqrt(diag(solve(crossprod(X * sqrt(W)))) * disp)
}

fam_fun <- function(name, link) {
  switch(name, gaussian = gaussian(link = link), binomial = binomial(link = link),
         poisson = poisson(link = link), gamma = Gamma(link = link))
}

out <- lapply(cases, function(cs) {
  if (is.null(cs$data)) cs$data <- "glm_data.csv"
  d <- frames[[cs$data]]
  args <- list(formula = as.formula(cs$r), data = d, family = fam_fun(cs$family, cs$link))
  if (!is.null(cs$weights)) args$weights <- d[[cs$weights]]
  if (!is.null(cs$offset)) args$offset <- d[[cs$offset]]
  fit0 <- suppressWarnings(do.call(glm, args))
  fit <- suppressWarnings(do.call(glm, c(args, list(control = glm.control(epsilon = 1e-15, maxit = 100)))))
  s <- summary(fit)
  first <- 1:10
  list(name = cs$name, data = cs$data, py = cs$py, r = cs$r, family = cs$family, link = cs$link,
       boundary = fit0$boundary,
       weights = if (is.null(cs$weights)) NA else cs$weights,
       offset = if (is.null(cs$offset)) NA else cs$offset,
       coef_names = names(coef(fit)), coef = unname(coef(fit)),
       se = unname(s$coefficients[, 2]), pvalues = unname(s$coefficients[, 4]),
       deviance = deviance(fit), null_deviance = fit$null.deviance,
       aic = AIC(fit), bic = BIC(fit), loglik = as.numeric(logLik(fit)),
       df_residual = fit$df.residual, df_null = fit$df.null, dispersion = s$dispersion,
       pearson_chi2 = sum(residuals(fit, "pearson")^2), iter = fit$iter,
       converged = fit$converged,
       default = list(coef = unname(coef(fit0)), se = unname(summary(fit0)$coefficients[, 2]),
                      se_final = unname(se_at_final(fit0)),
                      iter = fit0$iter, deviance = deviance(fit0), aic = AIC(fit0)),
       fitted = unname(fitted(fit)[first]),
       resid_deviance = unname(residuals(fit, "deviance")[first]),
       resid_pearson = unname(residuals(fit, "pearson")[first]),
       resid_working = unname(residuals(fit, "working")[first]),
       resid_response = unname(residuals(fit, "response")[first]))
})

ref <- list(r_version = R.version.string, cases = out)
writeLines(toJSON(ref, auto_unbox = TRUE, digits = I(17), pretty = TRUE, na = "null"),
           file.path(here, "glm_reference.json"))
