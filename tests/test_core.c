#include <check.h>
#include <stdlib.h>
#include "mgpo.h"

START_TEST(test_version)
{
    ck_assert_uint_eq(mgpo_version_number(), MGPO_VERSION_NUMBER);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("version");
    tcase_add_test(tc, test_version);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
